# aura-ops in a container: the CLI plus the client tools it drives.
# Mount the config, the repository and the data to snapshot, e.g.
#   docker run --rm --network host -v /etc/aura:/etc/aura -v /var/backups/aura:/var/backups/aura \
#     -e AURA_CONFIG=/etc/aura/aura.yaml -e AURA_DB_DSN aura-ops backup
FROM python:3.11-slim-bookworm

RUN apt-get update \
 && apt-get install -y --no-install-recommends postgresql-client-15 rsync openssh-client zstd acl \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/aura-ops
COPY pyproject.toml README.md ./
COPY aura_ops ./aura_ops
COPY playbooks ./playbooks
RUN pip install --no-cache-dir . && useradd --system --home /var/lib/aura aura

USER aura
ENTRYPOINT ["aura-ops"]
CMD ["--help"]
