#!/usr/bin/env bash
# Startup script of a worker VM (a Cloud TPU VM, or any systemd machine): installs localrules in
# /opt/localrules/venv, writes /etc/localrules/worker.env and the systemd unit
# localrules-worker.service, and (re)starts the worker. Compute Engine runs it as root at every
# boot; running it again updates the install and restarts the worker, which hands its trial back
# to the queue first. Guide: docs/cluster.md, "TPU VMs with systemd".
#
# Settings come from environment variables, or else from the VM's metadata attribute of the same
# name in lower case with dashes (LOCALRULES_DB_SECRET <- localrules-db-secret):
#   LOCALRULES_SOURCE       what pip installs: git+https://HOST/REPO.git@TAG, a wheel's https://
#                           or gs:// URL, or a local path (not needed with LOCALRULES_SKIP_INSTALL)
#   LOCALRULES_EXTRA        the setup.cfg extra that brings TensorFlow: tpu (default), gpu, cpu
#   LOCALRULES_FIND_LINKS   an extra pip page of links (tpu default: Google's libtpu releases)
#   LOCALRULES_DB_SECRET    a Secret Manager secret holding the database URL (preferred), or
#   LOCALRULES_DB           the mongodb:// URL itself (metadata is readable by project viewers)
#   LOCALRULES_ARTIFACTS    checkpoints and histories, shared by all workers: gs://BUCKET/PATH
#   LOCALRULES_WORKER_ARGS  more `localrules worker` flags, e.g. "--experiment ia-imagenet"
#   LOCALRULES_USER         the user the worker runs as (default localrules, created if missing)
#   LOCALRULES_PYTHON       the interpreter of the virtualenv (default python3)
#   LOCALRULES_UNIT         the unit file to install (default: the metadata attribute
#                           localrules-worker-unit, i.e. docker/tpu-vm/localrules-worker.service)
# For tests and dry runs:
#   LOCALRULES_ROOT         a directory that stands for / in every path written (default /)
#   LOCALRULES_SKIP_INSTALL=1  no user, no virtualenv, no pip
#   LOCALRULES_SKIP_SYSTEMD=1  no systemctl
#   LOCALRULES_METADATA_URL the metadata server's attributes URL; empty: read no metadata
set -euo pipefail

LIBTPU_INDEX=https://storage.googleapis.com/libtpu-tf-releases/index.html
UNIT_NAME=localrules-worker.service
# The paths the unit file names; under LOCALRULES_ROOT they move with it.
VENV=/opt/localrules/venv
ENV_FILE=/etc/localrules/worker.env
HOME_DIR=/var/lib/localrules

metadata_url=${LOCALRULES_METADATA_URL-http://metadata.google.internal/computeMetadata/v1/instance/attributes}

log() { printf 'localrules startup: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# The metadata attribute KEY, or nothing when it is not set (or metadata is off).
metadata() {
    [[ -n $metadata_url ]] || return 0
    curl --silent --fail --retry 3 --max-time 10 -H 'Metadata-Flavor: Google' \
        "$metadata_url/$1" || true
}

# The setting NAME: the environment variable, else the metadata attribute name-in-lower-case.
setting() {
    local name=$1 value=${!1:-} key
    if [[ -z $value ]]; then
        key=${name,,}
        value=$(metadata "${key//_/-}")
    fi
    printf '%s' "$value"
}

# Values are written single-quoted (no expansion by systemd or a shell), so they must not hold a
# single quote or a line break.
check_value() {
    case $2 in
        *"'"* | *$'\n'*) die "$1 must not contain a single quote or a line break (URL-encode it)" ;;
    esac
}

read_settings() {
    root=${LOCALRULES_ROOT:-}
    root=${root%/}
    [[ -z $root || $root =~ ^/[A-Za-z0-9/._-]*$ ]] \
        || die "LOCALRULES_ROOT must be an absolute path of letters, digits and / . _ -, got '$root'"

    extra=$(setting LOCALRULES_EXTRA)
    extra=${extra:-tpu}
    case $extra in
        cpu | gpu | tpu) ;;
        *) die "LOCALRULES_EXTRA must be tpu, gpu or cpu, got '$extra'" ;;
    esac
    find_links=$(setting LOCALRULES_FIND_LINKS)
    if [[ -z $find_links && $extra == tpu ]]; then
        find_links=$LIBTPU_INDEX
    fi
    source_spec=$(setting LOCALRULES_SOURCE)
    if [[ ${LOCALRULES_SKIP_INSTALL:-0} != 1 && -z $source_spec ]]; then
        die "LOCALRULES_SOURCE is not set: give what pip installs (git+https://...@TAG, a wheel URL or path)"
    fi
    user=$(setting LOCALRULES_USER)
    user=${user:-localrules}
    [[ $user =~ ^[a-z_][a-z0-9_-]*$ ]] || die "LOCALRULES_USER is not a valid user name: '$user'"
    python=${LOCALRULES_PYTHON:-python3}

    local secret
    secret=$(setting LOCALRULES_DB_SECRET)
    if [[ -n $secret ]]; then
        db=$(gcloud secrets versions access latest --secret="$secret") \
            || die "cannot read secret '$secret' (does the VM's service account have roles/secretmanager.secretAccessor?)"
    else
        db=$(setting LOCALRULES_DB)
    fi
    [[ -n $db ]] || die "set LOCALRULES_DB_SECRET or LOCALRULES_DB: the workers need the database"
    [[ $db == mongodb://* || $db == mongodb+srv://* ]] \
        || die "LOCALRULES_DB must be a mongodb:// or mongodb+srv:// URL: workers on many machines share one database"
    check_value LOCALRULES_DB "$db"

    artifacts=$(setting LOCALRULES_ARTIFACTS)
    [[ -n $artifacts ]] || die "LOCALRULES_ARTIFACTS is not set: give a bucket all workers share, e.g. gs://BUCKET/localrules-runs"
    [[ $artifacts == gs://* ]] \
        || log "warning: LOCALRULES_ARTIFACTS is not a gs:// bucket; a trial requeued on another machine cannot resume from its checkpoint"
    check_value LOCALRULES_ARTIFACTS "$artifacts"

    worker_args=$(setting LOCALRULES_WORKER_ARGS)
    check_value LOCALRULES_WORKER_ARGS "$worker_args"
    case " $worker_args " in
        *" --db "* | *" --db="*) die "LOCALRULES_WORKER_ARGS must not hold --db: the URL goes in the environment file, never on the command line" ;;
    esac
}

# The unit file's text, from LOCALRULES_UNIT or the metadata; checked to be the worker's unit.
read_unit() {
    if [[ -n ${LOCALRULES_UNIT:-} ]]; then
        [[ -r $LOCALRULES_UNIT ]] || die "LOCALRULES_UNIT: cannot read '$LOCALRULES_UNIT'"
        unit=$(<"$LOCALRULES_UNIT")
    else
        unit=$(metadata localrules-worker-unit)
    fi
    [[ -n $unit ]] || die "no unit file: pass docker/tpu-vm/$UNIT_NAME as the metadata attribute localrules-worker-unit (or set LOCALRULES_UNIT)"
    grep -q "^ExecStart=$VENV/bin/localrules worker" <<<"$unit" \
        || die "the unit file does not run $VENV/bin/localrules worker; is it docker/tpu-vm/$UNIT_NAME?"
}

# PEP 508 form "localrules[EXTRA] @ URL", so that every kind of source gets the extra.
pip_requirement() {
    local source=$source_spec dir
    if [[ $source == gs://* ]]; then
        dir=$(mktemp -d)
        gcloud storage cp "$source" "$dir/" >&2 || die "cannot copy $source"
        source=$dir/${source##*/}
    fi
    case $source in
        *://*) ;;
        *) [[ -e $source ]] || die "LOCALRULES_SOURCE: no such file or directory: $source"
           source=file://$(realpath -- "$source") ;;
    esac
    printf 'localrules[%s] @ %s' "$extra" "$source"
}

install_package() {
    if ! id -u "$user" >/dev/null 2>&1; then
        useradd --system --home-dir "$HOME_DIR" --no-create-home --shell /usr/sbin/nologin "$user"
        log "created user $user"
    fi
    if ! "$python" -c 'import ensurepip' 2>/dev/null; then
        # Debian and Ubuntu ship virtualenv support separately.
        apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
    fi
    [[ -x $root$VENV/bin/pip ]] || "$python" -m venv "$root$VENV"
    local requirement links=()
    requirement=$(pip_requirement)
    [[ -z $find_links ]] || links=(--find-links "$find_links")
    log "installing $requirement"
    "$root$VENV/bin/pip" install --no-cache-dir --disable-pip-version-check \
        ${links[@]+"${links[@]}"} "$requirement"
    "$root$VENV/bin/localrules" --version >&2
}

# Root-only from the start (mktemp creates 0600) and replaced atomically: it holds the password.
write_env_file() {
    local path=$root$ENV_FILE tmp
    install -d -m 0755 "$(dirname "$path")"
    tmp=$(mktemp "$path.XXXXXX")
    {
        printf '# Written by docker/tpu-vm/startup.sh for %s; rerun the script to change it.\n' \
            "$UNIT_NAME"
        printf "LOCALRULES_DB='%s'\n" "$db"
        printf "LOCALRULES_ARTIFACTS='%s'\n" "$artifacts"
        printf "LOCALRULES_WORKER_ARGS='%s'\n" "$worker_args"
    } >"$tmp"
    chmod 0600 "$tmp"
    mv -f "$tmp" "$path"
    log "wrote $path"
}

write_unit() {
    local path=$root/etc/systemd/system/$UNIT_NAME tmp
    install -d -m 0755 "$(dirname "$path")"
    tmp=$(mktemp "$path.XXXXXX")
    sed -e "s|$VENV/|$root$VENV/|g" -e "s|$ENV_FILE|$root$ENV_FILE|g" \
        -e "s|^User=.*|User=$user|" <<<"$unit" >"$tmp"
    chmod 0644 "$tmp"
    mv -f "$tmp" "$path"
    log "wrote $path"
}

main() {
    read_settings
    read_unit
    if [[ ${LOCALRULES_SKIP_INSTALL:-0} != 1 ]]; then
        install_package
    fi
    write_env_file
    write_unit
    if [[ ${LOCALRULES_SKIP_SYSTEMD:-0} != 1 ]]; then
        systemctl daemon-reload
        systemctl enable "$UNIT_NAME"
        systemctl restart "$UNIT_NAME"
        log "started $UNIT_NAME; follow it with: journalctl -u $UNIT_NAME -f"
    fi
}

main "$@"
