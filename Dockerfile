# repbot in a container: `docker build -t repbot .`, then
#   docker run -d --name repbot -v repbot-state:/var/lib/repbot \
#     -v /etc/repbot/repbot.toml:/etc/repbot/repbot.toml:ro repbot
# The config must be readable by uid 10001 (chown 10001 it, or keep secrets in *_file keys
# pointing at mounted secrets). Metrics: set [metrics] listen = "0.0.0.0:9464" and publish the port.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md config.example.toml ./
COPY bot ./bot
COPY checks ./checks
# Wheels for repbot and every dependency; a compiler only in this stage, for any without a binary wheel.
RUN apt-get update && apt-get install -y --no-install-recommends build-essential cmake \
    && pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN useradd --system --uid 10001 --home-dir /var/lib/repbot --create-home --shell /usr/sbin/nologin repbot
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links /wheels repbot && rm -rf /wheels
USER repbot
WORKDIR /var/lib/repbot
VOLUME ["/var/lib/repbot"]
EXPOSE 9464
ENTRYPOINT ["repbot"]
CMD ["run", "-c", "/etc/repbot/repbot.toml"]
