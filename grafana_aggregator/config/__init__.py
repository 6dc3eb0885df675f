"""Settings: the ini file, the flags and the remote services file, read into frozen values with clear errors."""
