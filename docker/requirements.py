"""Print the requirements of the image's dependency layer, one per line.

    python requirements.py SETUP_CFG PYPROJECT_TOML EXTRA

They are setup.cfg's ``install_requires``, the TensorFlow extra named by EXTRA (cpu, gpu or tpu)
and pyproject.toml's build requirements. The Dockerfile installs them before it copies the
source, so that a change to the code does not download TensorFlow again, and then installs the
package itself with ``--no-deps --no-build-isolation``. Standard library only: it runs in the
base image before anything is installed.
"""

from __future__ import annotations

import configparser
import sys

VARIANTS = ("cpu", "gpu", "tpu")


def _lines(value: str) -> list[str]:
    return [line.strip() for line in value.splitlines()
            if line.strip() and not line.strip().startswith("#")]


def requirements(setup_cfg: str, pyproject: str, extra: str) -> list[str]:
    import tomllib  # Python 3.11+, as in the image (the project itself supports 3.10)

    if extra not in VARIANTS:
        raise ValueError(f"TF_EXTRA must be one of {', '.join(VARIANTS)}, got {extra!r}")
    config = configparser.ConfigParser()
    if not config.read(setup_cfg):
        raise ValueError(f"cannot read {setup_cfg}")
    with open(pyproject, "rb") as file:
        build = tomllib.load(file)["build-system"]["requires"]
    return (_lines(config["options"]["install_requires"])
            + _lines(config["options.extras_require"][extra]) + list(build))


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage:", __doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    try:
        print("\n".join(requirements(*argv)))
    except (ValueError, KeyError, OSError) as err:
        print(f"requirements.py: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
