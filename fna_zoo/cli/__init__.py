"""Every command line of the project, one module a command, on one convention (`common`).

Installed commands: `fna-fetch`, `fna-search`, `fna-retrain`, `fna-test`, `fna-latency-table`, `fna-export`,
`fna-bench`, `fna-publish` (each `fna_zoo.cli.<name>:main`; `python -m fna_zoo.cli.<name>` runs the same,
e.g. under `torchrun`). Shared flags: `--config`, `--set KEY=VALUE ...`, `-o/--output`, `--data-path`
(`--data_path`), `-v/-q`, `--debug`. A user error is one `error: ...` line and exit code 2.

`import fna_zoo` does not import this package; each command imports its library code when it runs.
"""
