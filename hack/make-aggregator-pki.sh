#!/usr/bin/env bash
# Generate a throw-away development PKI for grafana-aggregator.
#
# Produces a self-signed CA plus two leaf certificates signed by it:
#
#   ca.crt / ca.key          CN=grafana-aggregator-dev-ca (valid 3650 days)
#   server.crt / server.key  CN=localhost, O=aggregated; serves the example
#                            backend on localhost:7443 and can double as the
#                            aggregator's own serving certificate
#   client.crt / client.key  CN=development, O=system:masters; the
#                            aggregator's proxy client certificate and a
#                            kubectl admin certificate
#
# Everything here is for local development only: keys are unencrypted and
# the CA is trusted for nothing but this setup.
#
# Only `openssl` (OpenSSL 3) is required.

set -euo pipefail

script_dir="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)"
repo_root="$(dirname -- "$script_dir")"
prog="$(basename -- "$0")"

# Validity periods, in days.
# The CA must outlive the leaves by a comfortable margin. Grafana's original
# script forgot to pass `-days` when creating its CA, so OpenSSL fell back to
# its 30-day default and the whole dev setup silently broke a month later.
# Always pass -days explicitly.
CA_DAYS=3650
LEAF_DAYS=825

usage() {
    cat <<EOF
Usage: $prog [--force] [--out DIR]

Generate a development PKI (CA, server and client certificates) for
grafana-aggregator.

Options:
  --out DIR   write the files into DIR
              (default: $repo_root/data/grafana-aggregator)
  --force     regenerate even if a complete set already exists
  -h, --help  show this help and exit

Files written: ca.crt ca.key server.crt server.key client.crt client.key
EOF
}

force=0
out_dir="$repo_root/data/grafana-aggregator"

while [ "$#" -gt 0 ]; do
    case "$1" in
        -h|--help)
            usage
            exit 0
            ;;
        --force)
            force=1
            ;;
        --out)
            if [ "$#" -lt 2 ] || [ -z "$2" ]; then
                echo "$prog: --out needs a directory argument" >&2
                usage >&2
                exit 2
            fi
            out_dir="$2"
            shift
            ;;
        --out=*)
            out_dir="${1#--out=}"
            if [ -z "$out_dir" ]; then
                echo "$prog: --out needs a directory argument" >&2
                usage >&2
                exit 2
            fi
            ;;
        *)
            echo "$prog: unknown argument: $1" >&2
            usage >&2
            exit 2
            ;;
    esac
    shift
done

if ! command -v openssl >/dev/null 2>&1; then
    echo "$prog: openssl not found on PATH" >&2
    exit 1
fi

files=(ca.crt ca.key server.crt server.key client.crt client.key)

all_present=1
for f in "${files[@]}"; do
    if [ ! -f "$out_dir/$f" ]; then
        all_present=0
        break
    fi
done

if [ "$all_present" -eq 1 ] && [ "$force" -eq 0 ]; then
    echo "dev PKI already present in $out_dir (use --force to regenerate)"
    exit 0
fi

# Parent folders get the caller's umask; DIR itself is private.
mkdir -p -- "$(dirname -- "$out_dir")"
if [ ! -d "$out_dir" ]; then
    mkdir -m 0700 -- "$out_dir"
fi

# Private keys (and the temporary folder) must never be readable by others.
umask 077

out_dir="$(cd -- "$out_dir" && pwd -P)"
parent_dir="$(dirname -- "$out_dir")"
base_name="$(basename -- "$out_dir")"

# Build the new set in a sibling folder (same filesystem, so the final `mv`s
# are renames) and only move it into place once everything succeeded.
work_dir="$(mktemp -d "$parent_dir/.${base_name}.tmp.XXXXXX")"
cleanup() {
    rm -rf -- "$work_dir"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# A private OpenSSL config, so the result does not depend on the system
# openssl.cnf (whose default extension sections vary between distributions).
cat >"$work_dir/openssl.cnf" <<'EOF'
[ req ]
distinguished_name = req_dn
prompt             = no
utf8               = yes
string_mask        = utf8only

[ req_dn ]
# Overridden with -subj on every invocation.
CN = placeholder

[ v3_ca ]
basicConstraints       = critical, CA:TRUE
keyUsage               = critical, keyCertSign, cRLSign, digitalSignature
subjectKeyIdentifier   = hash

[ v3_server ]
basicConstraints       = critical, CA:FALSE
keyUsage               = critical, digitalSignature, keyEncipherment
extendedKeyUsage       = serverAuth, clientAuth
subjectKeyIdentifier   = hash
authorityKeyIdentifier = keyid:always
subjectAltName         = DNS:localhost, IP:127.0.0.1, DNS:v0alpha1.example.grafana.app.default.svc

[ v3_client ]
basicConstraints       = critical, CA:FALSE
keyUsage               = critical, digitalSignature, keyEncipherment
extendedKeyUsage       = clientAuth
subjectKeyIdentifier   = hash
authorityKeyIdentifier = keyid:always
EOF

ossl() {
    OPENSSL_CONF="$work_dir/openssl.cnf" openssl "$@"
}

genkey() {
    # EC P-256, unencrypted PKCS#8 PEM.
    ossl genpkey -algorithm EC \
        -pkeyopt ec_paramgen_curve:prime256v1 \
        -pkeyopt ec_param_enc:named_curve \
        -out "$1" 2>/dev/null
}

serial() {
    # 128 random bits; the leading "01" keeps it positive and non-zero.
    local hex
    hex="$(ossl rand -hex 15)"
    echo "0x01${hex}"
}

# sign_leaf NAME SUBJECT EXTENSION_SECTION
sign_leaf() {
    local name="$1" subject="$2" section="$3" leaf_serial
    # Separate assignment so that `set -e` sees a failing `openssl rand`.
    leaf_serial="$(serial)"
    genkey "$work_dir/$name.key"
    ossl req -new -config "$work_dir/openssl.cnf" \
        -key "$work_dir/$name.key" \
        -subj "$subject" \
        -out "$work_dir/$name.csr"
    ossl x509 -req \
        -in "$work_dir/$name.csr" \
        -CA "$work_dir/ca.crt" -CAkey "$work_dir/ca.key" \
        -set_serial "$leaf_serial" \
        -days "$LEAF_DAYS" -sha256 \
        -extfile "$work_dir/openssl.cnf" -extensions "$section" \
        -out "$work_dir/$name.crt" 2>/dev/null
    rm -f -- "$work_dir/$name.csr"
}

# CA
ca_serial="$(serial)"
genkey "$work_dir/ca.key"
ossl req -x509 -new -config "$work_dir/openssl.cnf" \
    -key "$work_dir/ca.key" \
    -subj "/CN=grafana-aggregator-dev-ca" \
    -set_serial "$ca_serial" \
    -days "$CA_DAYS" -sha256 \
    -extensions v3_ca \
    -out "$work_dir/ca.crt"

# Leaves
sign_leaf server "/O=aggregated/CN=localhost" v3_server
sign_leaf client "/O=system:masters/CN=development" v3_client

# Sanity check before anything is moved into place.
ossl verify -CAfile "$work_dir/ca.crt" -purpose sslserver \
    "$work_dir/server.crt" >/dev/null
ossl verify -CAfile "$work_dir/ca.crt" -purpose sslclient \
    "$work_dir/client.crt" >/dev/null

for f in "${files[@]}"; do
    case "$f" in
        *.key) chmod 0600 "$work_dir/$f" ;;
        *.crt) chmod 0644 "$work_dir/$f" ;;
        *) ;;
    esac
done

# Everything succeeded: move the set into place. Keys first, then the certs,
# so a reader never sees a certificate without its matching key being ready.
for f in ca.key server.key client.key ca.crt server.crt client.crt; do
    mv -f -- "$work_dir/$f" "$out_dir/$f"
done

echo "Wrote dev PKI to $out_dir:"
for f in "${files[@]}"; do
    echo "  $out_dir/$f"
done
echo "These files are for development only; never use them in production."
