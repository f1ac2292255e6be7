# SPDX-License-Identifier: AGPL-3.0-or-later
"""VmRSS of a fresh interpreter after importing the CLI and then the serve path (issue 12, memory).

    python bench/import_rss.py            # with the Python (and venv) that runs Ozwald

Run it twice: the first run may compile bytecode, which inflates the numbers when no .pyc is cached.
Prints the RSS at start, after `import ozwald.cli` and after `import ozwald.process` (what
`ozwald serve` imports before it does anything), the number of modules loaded, and whether redis-py,
asyncio or ssl came along; then what the metrics add when they are on (`import ozwald.api.metrics`, which
brings prometheus_client: serve imports it only then).
"""

from __future__ import annotations

import sys


def vm_rss_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def main() -> None:
    start = vm_rss_mb()
    import ozwald.cli

    cli = vm_rss_mb()
    import ozwald.process

    serve = vm_rss_mb()
    loaded = ", ".join(f"{name}: {'yes' if name in sys.modules else 'no'}" for name in ("redis", "asyncio", "ssl"))
    modules = len(sys.modules)
    print(f"Python {sys.version.split()[0]}: start {start:.1f} MB, after import ozwald.cli {cli:.1f} MB, "
          f"after import ozwald.process {serve:.1f} MB; {modules} modules ({loaded})")
    import ozwald.api.metrics  # noqa: F401

    metrics = vm_rss_mb()
    print(f"metrics on (import ozwald.api.metrics, prometheus_client): {metrics:.1f} MB, "
          f"+{metrics - serve:.1f} MB and +{len(sys.modules) - modules} modules")


if __name__ == "__main__":
    main()
