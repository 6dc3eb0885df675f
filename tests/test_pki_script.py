"""
Tests for C{hack/make-aggregator-pki.sh}, the development PKI generator.

The script is run as a subprocess into temporary folders and its output is
inspected with the C{cryptography} library.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import shutil
import stat
import subprocess
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import verification
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from twisted.trial.unittest import SkipTest, SynchronousTestCase

REPO_ROOT = Path(__file__).resolve().parent.parent
SCRIPT = REPO_ROOT / "hack" / "make-aggregator-pki.sh"

KEYS = ("ca.key", "server.key", "client.key")
CERTS = ("ca.crt", "server.crt", "client.crt")
ALL_FILES = CERTS + KEYS

SERVER_DNS_NAMES = {"localhost", "v0alpha1.example.grafana.app.default.svc"}
SERVER_IPS = {ipaddress.ip_address("127.0.0.1")}


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _requireOpenSSL(case: SynchronousTestCase) -> str:
    """
    Return the path of the C{openssl} binary; fail under CI and skip
    elsewhere when it is missing.
    """
    path = shutil.which("openssl")
    if path is None:
        message = "openssl is not installed; hack/make-aggregator-pki.sh needs it"
        if os.environ.get("CI") == "true":
            case.fail(message + " (CI=true, so this is an error)")
        raise SkipTest(message)
    return path


class PKIScriptTests(SynchronousTestCase):
    """
    Tests for C{hack/make-aggregator-pki.sh}.
    """

    def setUp(self) -> None:
        self.openssl = _requireOpenSSL(self)
        self.base = Path(self.mktemp()).absolute()
        self.base.mkdir(parents=True)
        # A nested, not yet existing folder: the script must create it.
        self.out = self.base / "pki" / "grafana-aggregator"

    # helpers

    def runScript(
        self,
        *args: str,
        script: Path = SCRIPT,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """
        Run the script with C{args} and return the finished process.
        """
        return subprocess.run(
            [str(script), *args],
            capture_output=True,
            text=True,
            env=env,
            cwd=str(cwd) if cwd is not None else None,
            timeout=120,
            check=False,
        )

    def generate(self, *extra: str) -> subprocess.CompletedProcess[str]:
        """
        Run the script into C{self.out} and assert that it succeeded.
        """
        result = self.runScript("--out", str(self.out), *extra)
        self.assertEqual(
            result.returncode,
            0,
            f"script failed:\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}",
        )
        return result

    def cert(self, name: str, folder: Path | None = None) -> x509.Certificate:
        """
        Load the PEM certificate C{name} from the output folder.
        """
        folder = self.out if folder is None else folder
        return x509.load_pem_x509_certificate((folder / name).read_bytes())

    def contents(self, folder: Path | None = None) -> dict[str, bytes]:
        """
        Return the bytes of all six files, by name.
        """
        folder = self.out if folder is None else folder
        return {name: (folder / name).read_bytes() for name in ALL_FILES}

    def assertChainsToCA(self, leaf: x509.Certificate, ca: x509.Certificate) -> None:
        """
        Assert that C{leaf} carries a valid signature by C{ca}.
        """
        self.assertEqual(leaf.issuer, ca.subject)
        leaf.verify_directly_issued_by(ca)

    # tests

    def test_script_is_executable(self) -> None:
        """
        The script is committed as an executable file with a bash shebang.
        """
        self.assertTrue(os.access(SCRIPT, os.X_OK), f"{SCRIPT} is not executable")
        self.assertTrue(SCRIPT.read_text().startswith("#!/usr/bin/env bash\n"))
        self.assertIn("set -euo pipefail", SCRIPT.read_text())

    def test_writes_six_files_with_modes(self) -> None:
        """
        A run creates the output folder with mode 0700, keys with mode 0600
        and certificates with mode 0644, and nothing else.
        """
        self.generate()
        self.assertEqual(stat.S_IMODE(self.out.stat().st_mode), 0o700)
        self.assertEqual(sorted(os.listdir(self.out)), sorted(ALL_FILES))
        for name in KEYS:
            self.assertEqual(
                stat.S_IMODE((self.out / name).stat().st_mode), 0o600, name
            )
        for name in CERTS:
            self.assertEqual(
                stat.S_IMODE((self.out / name).stat().st_mode), 0o644, name
            )
        # The temporary sibling folder is gone.
        self.assertEqual(os.listdir(self.out.parent), [self.out.name])

    def test_existing_folder_mode_is_kept(self) -> None:
        """
        An output folder that already exists is used as it is.
        """
        self.out.mkdir(parents=True, mode=0o755)
        os.chmod(self.out, 0o755)
        self.generate()
        self.assertEqual(stat.S_IMODE(self.out.stat().st_mode), 0o755)
        self.assertEqual(sorted(os.listdir(self.out)), sorted(ALL_FILES))

    def test_output_names_files_and_warns(self) -> None:
        """
        The script lists every file it wrote and says they are for
        development only.
        """
        result = self.generate()
        for name in ALL_FILES:
            self.assertIn(str(self.out / name), result.stdout)
        self.assertIn("development only", result.stdout)

    def test_keys_are_unencrypted_p256_matching_their_certificates(self) -> None:
        """
        Each key is an unencrypted EC P-256 PEM key whose public half is the
        one in the certificate of the same name.
        """
        self.generate()
        for stem in ("ca", "server", "client"):
            pem = (self.out / f"{stem}.key").read_bytes()
            self.assertNotIn(b"ENCRYPTED", pem)
            key = serialization.load_pem_private_key(pem, password=None)
            assert isinstance(key, ec.EllipticCurvePrivateKey)
            self.assertIsInstance(key.curve, ec.SECP256R1)
            certKey = self.cert(f"{stem}.crt").public_key()
            assert isinstance(certKey, ec.EllipticCurvePublicKey)
            self.assertEqual(key.public_key().public_numbers(), certKey.public_numbers())

    def test_ca_is_long_lived_self_signed_ca(self) -> None:
        """
        The CA is self-signed, marked as a CA, may sign certificates and is
        valid for at least a year (not OpenSSL's 30-day default).
        """
        self.generate()
        ca = self.cert("ca.crt")
        self.assertEqual(
            ca.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value,
            "grafana-aggregator-dev-ca",
        )
        self.assertEqual(ca.issuer, ca.subject)
        ca.verify_directly_issued_by(ca)

        lifetime = ca.not_valid_after_utc - ca.not_valid_before_utc
        self.assertGreaterEqual(lifetime, datetime.timedelta(days=365))
        self.assertGreater(ca.not_valid_after_utc, _now() + datetime.timedelta(days=365))

        constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints)
        self.assertTrue(constraints.critical)
        self.assertTrue(constraints.value.ca)

        usage = ca.extensions.get_extension_for_class(x509.KeyUsage)
        self.assertTrue(usage.critical)
        self.assertTrue(usage.value.key_cert_sign)
        self.assertTrue(usage.value.crl_sign)
        self.assertTrue(usage.value.digital_signature)

        ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)

        # The CA outlives the leaves it signed.
        for name in ("server.crt", "client.crt"):
            self.assertGreater(ca.not_valid_after_utc, self.cert(name).not_valid_after_utc)

    def test_server_certificate(self) -> None:
        """
        The server certificate is a leaf for localhost, 127.0.0.1 and the
        example backend's service name, usable for serverAuth, and verifies
        against the CA for each of those names.
        """
        self.generate()
        ca = self.cert("ca.crt")
        server = self.cert("server.crt")

        self.assertEqual(
            server.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value,
            "localhost",
        )
        self.assertEqual(
            server.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value,
            "aggregated",
        )

        san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        self.assertEqual(set(san.value.get_values_for_type(x509.DNSName)), SERVER_DNS_NAMES)
        self.assertEqual(set(san.value.get_values_for_type(x509.IPAddress)), SERVER_IPS)
        self.assertEqual(len(list(san.value)), len(SERVER_DNS_NAMES) + len(SERVER_IPS))

        eku = server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        self.assertIn(ExtendedKeyUsageOID.SERVER_AUTH, eku)
        self.assertIn(ExtendedKeyUsageOID.CLIENT_AUTH, eku)

        usage = server.extensions.get_extension_for_class(x509.KeyUsage).value
        self.assertTrue(usage.digital_signature)
        self.assertTrue(usage.key_encipherment)
        self.assertFalse(usage.key_cert_sign)

        self.assertFalse(server.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
        aki = server.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
        ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        self.assertEqual(aki.key_identifier, ski.digest)

        lifetime = server.not_valid_after_utc - server.not_valid_before_utc
        self.assertEqual(lifetime, datetime.timedelta(days=825))

        self.assertChainsToCA(server, ca)
        builder = (
            verification.PolicyBuilder()
            .store(verification.Store([ca]))
            .time(_now())
        )
        subjects: list[x509.DNSName | x509.IPAddress] = [
            x509.DNSName(name) for name in sorted(SERVER_DNS_NAMES)
        ]
        subjects += [x509.IPAddress(ip) for ip in SERVER_IPS]
        for subject in subjects:
            chain = builder.build_server_verifier(subject).verify(server, [])
            self.assertEqual(chain[-1], ca)

        with self.assertRaises(verification.VerificationError):
            builder.build_server_verifier(x509.DNSName("example.com")).verify(server, [])

    def test_client_certificate(self) -> None:
        """
        The client certificate is CN=development in O=system:masters, only
        usable for clientAuth, and verifies against the CA.
        """
        self.generate()
        ca = self.cert("ca.crt")
        client = self.cert("client.crt")

        self.assertEqual(
            client.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value,
            "development",
        )
        self.assertEqual(
            client.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value,
            "system:masters",
        )
        eku = client.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        self.assertEqual(list(eku), [ExtendedKeyUsageOID.CLIENT_AUTH])

        usage = client.extensions.get_extension_for_class(x509.KeyUsage).value
        self.assertTrue(usage.digital_signature)
        self.assertTrue(usage.key_encipherment)
        self.assertFalse(usage.key_cert_sign)
        self.assertFalse(client.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)

        lifetime = client.not_valid_after_utc - client.not_valid_before_utc
        self.assertEqual(lifetime, datetime.timedelta(days=825))

        self.assertChainsToCA(client, ca)

        # Full path validation, including the clientAuth EKU.  The WebPKI
        # defaults demand a subjectAltName on leaves, which a Kubernetes
        # client certificate does not need; relax only that (cryptography
        # >= 45 lets the policy be adjusted).
        extensionPolicy = getattr(verification, "ExtensionPolicy", None)
        if extensionPolicy is not None:
            eePolicy = extensionPolicy.webpki_defaults_ee().may_be_present(
                x509.SubjectAlternativeName, verification.Criticality.AGNOSTIC, None
            )
            verifier = (
                verification.PolicyBuilder()
                .store(verification.Store([ca]))
                .time(_now())
                .extension_policies(
                    ca_policy=extensionPolicy.webpki_defaults_ca(), ee_policy=eePolicy
                )
                .build_client_verifier()
            )
            verified = verifier.verify(client, [])
            self.assertEqual(verified.chain[-1], ca)

    def test_second_run_is_ano_op(self) -> None:
        """
        Without --force a second run leaves a complete set byte-identical and
        says it is already present.
        """
        self.generate()
        before = self.contents()
        mtimes = {name: (self.out / name).stat().st_mtime_ns for name in ALL_FILES}

        result = self.generate()
        self.assertIn("already present", result.stdout)
        self.assertIn("--force", result.stdout)
        self.assertEqual(self.contents(), before)
        self.assertEqual(
            {name: (self.out / name).stat().st_mtime_ns for name in ALL_FILES}, mtimes
        )
        self.assertEqual(os.listdir(self.out.parent), [self.out.name])

    def test_force_regenerates(self) -> None:
        """
        --force replaces a complete set with a new CA and leaves signed by it.
        """
        self.generate()
        before = self.contents()

        result = self.generate("--force")
        self.assertNotIn("already present", result.stdout)
        after = self.contents()
        for name in ALL_FILES:
            self.assertNotEqual(after[name], before[name], name)

        ca = self.cert("ca.crt")
        for name in ("server.crt", "client.crt"):
            self.assertChainsToCA(self.cert(name), ca)

    def test_partial_set_is_regenerated(self) -> None:
        """
        When only some files exist (a broken earlier run), all six are
        generated anew, consistently.
        """
        self.generate()
        before = self.contents()
        (self.out / "client.key").unlink()

        result = self.generate()
        self.assertNotIn("already present", result.stdout)
        self.assertEqual(sorted(os.listdir(self.out)), sorted(ALL_FILES))
        after = self.contents()
        self.assertNotEqual(after["ca.crt"], before["ca.crt"])
        self.assertNotEqual(after["client.crt"], before["client.crt"])

        ca = self.cert("ca.crt")
        client = self.cert("client.crt")
        self.assertChainsToCA(client, ca)
        key = serialization.load_pem_private_key(after["client.key"], password=None)
        self.assertEqual(
            key.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            ),
            client.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            ),
        )

    def test_failed_run_changes_nothing(self) -> None:
        """
        If openssl fails half-way (here: when signing the leaves), the
        existing set stays untouched and no temporary folder is left behind.
        """
        self.generate()
        before = self.contents()

        fakeBin = self.base / "fakebin"
        fakeBin.mkdir()
        fake = fakeBin / "openssl"
        fake.write_text(
            "#!/bin/sh\n"
            'if [ "$1" = x509 ]; then echo "simulated failure" >&2; exit 1; fi\n'
            f'exec "{self.openssl}" "$@"\n'
        )
        fake.chmod(0o755)
        env = dict(os.environ, PATH=f"{fakeBin}{os.pathsep}{os.environ.get('PATH', '')}")

        result = self.runScript("--force", "--out", str(self.out), env=env)
        self.assertNotEqual(result.returncode, 0)
        self.assertEqual(self.contents(), before)
        self.assertEqual(sorted(os.listdir(self.out)), sorted(ALL_FILES))
        self.assertEqual(os.listdir(self.out.parent), [self.out.name])

    def test_default_folder_is_relative_to_script(self) -> None:
        """
        Without --out the files go to data/grafana-aggregator under the
        parent of the script's folder, whatever the working directory.
        """
        fakeRepo = self.base / "repo"
        (fakeRepo / "hack").mkdir(parents=True)
        script = fakeRepo / "hack" / SCRIPT.name
        shutil.copy2(SCRIPT, script)
        elsewhere = self.base / "elsewhere"
        elsewhere.mkdir()

        result = self.runScript(script=script, cwd=elsewhere)
        self.assertEqual(result.returncode, 0, result.stderr)
        target = fakeRepo / "data" / "grafana-aggregator"
        self.assertEqual(sorted(os.listdir(target)), sorted(ALL_FILES))
        self.assertEqual(os.listdir(elsewhere), [])

    def test_unknown_argument_exits2(self) -> None:
        """
        An unknown argument prints the usage on stderr, exits with status 2
        and writes nothing.
        """
        result = self.runScript("--out", str(self.out), "--frobnicate")
        self.assertEqual(result.returncode, 2)
        self.assertIn("Usage:", result.stderr)
        self.assertIn("--frobnicate", result.stderr)
        self.assertEqual(result.stdout, "")
        self.assertFalse(self.out.exists())

    def test_out_without_value_exits2(self) -> None:
        """
        --out without a folder is a usage error (status 2).
        """
        result = self.runScript("--out")
        self.assertEqual(result.returncode, 2)
        self.assertIn("Usage:", result.stderr)

    def test_help(self) -> None:
        """
        --help prints the usage on stdout and exits 0 without writing.
        """
        result = self.runScript("--help", "--out", str(self.out))
        self.assertEqual(result.returncode, 0)
        self.assertIn("Usage:", result.stdout)
        self.assertIn("--force", result.stdout)
        self.assertIn("--out DIR", result.stdout)
        self.assertFalse(self.out.exists())

    def test_shell_syntax(self) -> None:
        """
        The script parses with C{bash -n} (and passes shellcheck when it is
        installed).
        """
        result = subprocess.run(
            ["bash", "-n", str(SCRIPT)], capture_output=True, text=True, check=False
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        shellcheck = shutil.which("shellcheck")
        if shellcheck is not None:
            result = subprocess.run(
                [shellcheck, str(SCRIPT)], capture_output=True, text=True, check=False
            )
            self.assertEqual(result.returncode, 0, result.stdout + result.stderr)

