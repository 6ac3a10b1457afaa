#!/bin/bash
# InfluxDB 2.x first-start script (docker-compose.yml mounts it in /docker-entrypoint-initdb.d/).
#
# The influxdb image runs it once, right after its own setup (user, org, bucket, admin token from
# DOCKER_INFLUXDB_INIT_*), against a temporary influxd, with the influx CLI already logged in as
# the admin and DOCKER_INFLUXDB_INIT_BUCKET_ID set. It is skipped on every later start (the data
# volume is no longer empty). It must be executable: the image runs it with run-parts.
#
# Grafana asks in InfluxQL, through InfluxDB's v1 query API (/query?db=dnssec). For that it needs:
#   1. a DBRP mapping: database "dnssec", retention policy "autogen" (the default) -> the bucket;
#   2. a v1 authorisation: INFLUX_V1_USER / INFLUX_V1_PASSWORD, allowed to read the bucket only.
# The probe writes through the v2 API (bucket + token) and needs neither.
set -euo pipefail

V1_DATABASE=dnssec      # the database name Grafana's datasource (grafana/provisioning) queries
V1_RETENTION_POLICY=autogen

: "${DOCKER_INFLUXDB_INIT_BUCKET_ID:?the influxdb image sets it after its setup}"
: "${DOCKER_INFLUXDB_INIT_ORG:?set it in .env}"
: "${INFLUX_V1_USER:?set it in .env}"
: "${INFLUX_V1_PASSWORD:?set it in .env}"

influx v1 dbrp create \
  --org "${DOCKER_INFLUXDB_INIT_ORG}" \
  --bucket-id "${DOCKER_INFLUXDB_INIT_BUCKET_ID}" \
  --db "${V1_DATABASE}" \
  --rp "${V1_RETENTION_POLICY}" \
  --default

influx v1 auth create \
  --org "${DOCKER_INFLUXDB_INIT_ORG}" \
  --username "${INFLUX_V1_USER}" \
  --password "${INFLUX_V1_PASSWORD}" \
  --read-bucket "${DOCKER_INFLUXDB_INIT_BUCKET_ID}" \
  --description "Grafana (InfluxQL, read-only)"

echo "influxdb-init: database ${V1_DATABASE}/${V1_RETENTION_POLICY} -> bucket ${DOCKER_INFLUXDB_INIT_BUCKET}," \
     "v1 user ${INFLUX_V1_USER} (read)"
