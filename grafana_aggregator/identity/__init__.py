"""Who is calling and what they may do: authentication, authorization and the kubectl access token."""
