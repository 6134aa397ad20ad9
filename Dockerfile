# agentbot: the Discord bot in a small, non-root image.
#   docker build -t agentbot .
#   docker run --env-file .env -e DATA_DIR=/data -e HEALTH_HOST=0.0.0.0 -e HEALTH_PORT=8080 \
#     -v agentbot-data:/data --stop-timeout 60 \
#     --security-opt seccomp=unconfined --security-opt apparmor=unconfined --security-opt systempaths=unconfined \
#     agentbot
# The three -e come after --env-file and win over it: a .env copied from .env.example sets DATA_DIR=./data
# (the container's own layer, lost with it) and an empty HEALTH_PORT (/healthz off, so HEALTHCHECK fails),
# which would override this image's ENV below. compose.yaml sets them in each service's environment.
# --stop-timeout 60: turns pause within BOT_SHUTDOWN_GRACE_SECONDS (20 s) of SIGTERM, and in a PostgreSQL
# outage their saves and queued charges wait up to 30 s more; Docker's default 10 s kills the bot mid-way.
# The three --security-opt let run_python's sandbox make its own namespaces (README: "What a container
# needs"); without them PYTHON_SANDBOX=auto turns run_python off and says so.
# The install is make's: the hashed requirements.lock, then the project itself without dependencies.
# The data directory (SQLite, embedded Chroma memory, session workspaces) is the volume /data.

FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
WORKDIR /src
COPY requirements.lock ./
RUN /opt/venv/bin/pip install --no-deps --require-hashes -r requirements.lock
COPY pyproject.toml README.md LICENSE ./
COPY agent ./agent
COPY bot ./bot
RUN /opt/venv/bin/pip install --no-deps .

FROM python:3.11-slim-bookworm
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    DATA_DIR=/data \
    LOG_FORMAT=json \
    HEALTH_HOST=0.0.0.0 \
    HEALTH_PORT=8080
RUN useradd --system --uid 10001 --create-home --home-dir /home/agentbot agentbot \
    && mkdir /data && chown agentbot:agentbot /data
COPY --from=build /opt/venv /opt/venv
USER 10001:10001
WORKDIR /home/agentbot
VOLUME ["/data"]
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('HEALTH_PORT', '8080'), timeout=4)"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["agentbot"]
CMD ["run"]
