# dnssec-probe: the monitor daemon (`dnssec-probe run`) in a slim Python image.
#
# docker-compose.yml builds and runs it (`docker compose up -d --build`), mounting
# docker/dnssec-probe.toml and zones.txt over the copies baked in here and passing the InfluxDB
# org and bucket as flags, the token in the environment. On its own, as a one-shot check:
#   docker build -t dnssec-probe . && docker run --rm dnssec-probe check 1.in-addr.arpa
# The image needs no DNS tools: the probe speaks DNS itself, to the resolvers' IP addresses.
FROM python:3.11.13-slim-bookworm

# EXTRAS=fast adds uvloop (a wheel, no compiler needed); build with --build-arg EXTRAS= to skip it.
ARG EXTRAS=fast

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# The daemon runs as an unprivileged system user; its state directory (incidents, spool, line
# files) is the one volume, created here so that a new named volume inherits its owner.
RUN groupadd --system --gid 10001 dnssec-probe \
 && useradd --system --uid 10001 --gid dnssec-probe --home-dir /var/lib/dnssec-probe \
            --shell /usr/sbin/nologin dnssec-probe \
 && mkdir -p /var/lib/dnssec-probe /etc/dnssec-probe \
 && chown dnssec-probe:dnssec-probe /var/lib/dnssec-probe

# pyproject.toml reads README.md (readme =) and packages probe/ only.
WORKDIR /usr/src/dnssec-probe
COPY pyproject.toml README.md ./
COPY probe ./probe
RUN pip install --no-cache-dir ".${EXTRAS:+[$EXTRAS]}" \
 && rm -rf build ./*.egg-info

COPY zones.txt /etc/dnssec-probe/zones.txt
COPY docker/dnssec-probe.toml /etc/dnssec-probe/dnssec-probe.toml

WORKDIR /var/lib/dnssec-probe
USER dnssec-probe:dnssec-probe
VOLUME /var/lib/dnssec-probe
# metrics_listen: Prometheus /metrics and /healthz.
EXPOSE 9153

# The slim image has no curl; /healthz answers 503 when the last round or write failed.
HEALTHCHECK --interval=30s --timeout=10s --start-period=90s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9153/healthz', timeout=5)"]

ENTRYPOINT ["dnssec-probe"]
CMD ["run", "--config", "/etc/dnssec-probe/dnssec-probe.toml"]
