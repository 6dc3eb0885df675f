"""Services that keep stored state right over time, driven by the injected clock."""
