#!/usr/bin/env bash
# Provision one lab VM: app hosts get Python, a venv with the sample project's
# requirements and supervisor; the db host gets PostgreSQL.
set -euo pipefail
role="$1"
apt-get update -q
if [ "$role" = db ]; then
  apt-get install -y -q postgresql
else
  apt-get install -y -q python3-venv postgresql-client supervisor tar
  id deploy >/dev/null 2>&1 || useradd -m -s /bin/bash deploy
  sudo -u deploy python3 -m venv /home/deploy/venv
  sudo -u deploy /home/deploy/venv/bin/pip install 'Django>=4.2,<6' gunicorn 'psycopg[binary]'
fi
