"""The `workers` setting: a whole number of processes or `auto`, from the ini file or `--workers`."""

from __future__ import annotations

import os

from twisted.trial.unittest import SynchronousTestCase

from grafana_aggregator.config.settings import ConfigError, load_settings, usable_cpus


class WorkersSettingTests(SynchronousTestCase):
    """`[grafana-apiserver] workers` and `--workers`."""

    def ini(self, text: str) -> str:
        path = self.mktemp()
        with open(path, "w") as handle:
            handle.write(text)
        return path

    def test_default_is_one_process(self) -> None:
        """Without the setting the daemon stays one process, as before."""
        self.assertEqual(load_settings(None).workers, 1)

    def test_number_from_ini_and_flag(self) -> None:
        """A number in the ini file is used; the flag beats it."""
        path = self.ini("[grafana-apiserver]\nworkers = 3\n")
        self.assertEqual(load_settings(path).workers, 3)
        self.assertEqual(load_settings(path, {"workers": "2"}).workers, 2)

    def test_auto_is_the_usable_cpus(self) -> None:
        """`auto` is one process per CPU this process may run on."""
        self.assertEqual(load_settings(None, {"workers": "auto"}).workers, usable_cpus())
        self.assertEqual(usable_cpus(), len(os.sched_getaffinity(0)))

    def test_bad_values_name_the_key_and_the_file(self) -> None:
        """Zero, negative numbers and words are refused with the key and the file in the message."""
        for text in ("0", "-2", "many", "1.5"):
            path = self.ini(f"[grafana-apiserver]\nworkers = {text}\n")
            with self.assertRaises(ConfigError) as raised:
                load_settings(path)
            self.assertIn(f"invalid value for [grafana-apiserver] workers in {path}", str(raised.exception))
            self.assertIn("auto", str(raised.exception))
        with self.assertRaises(ConfigError) as raised:
            load_settings(None, {"workers": "none"})
        self.assertIn("--workers", str(raised.exception))
