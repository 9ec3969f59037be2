# Prometheus from Debian 12's package, on the project's registry-free base image (see
# .ci/docker-setup.sh / deployments/docker/build-images.sh for conductor-base:bookworm).
#
#   DOCKER_BUILDKIT=0 docker build -f prometheus.Dockerfile -t claude-conductor-prometheus:latest .
# (or `docker compose --profile monitoring build prometheus` from deployments/docker)
ARG BASE_IMAGE=conductor-base:bookworm
FROM ${BASE_IMAGE}
ENV DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8
RUN apt-get update \
 && apt-get install -y --no-install-recommends prometheus \
 && apt-get clean && rm -rf /var/lib/apt/lists/* /var/cache/apt/* /var/log/apt /var/log/dpkg.log \
 && install -d -o prometheus -g prometheus -m 0750 /prometheus
USER prometheus
EXPOSE 9090
ENTRYPOINT ["/usr/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]
