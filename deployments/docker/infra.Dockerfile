# The docker tier's infrastructure, for machines without a registry: PostgreSQL 15, Redis 7,
# nginx and the agents' egress proxy (tinyproxy) from Debian 12 in one image (each service runs
# one of them). With a registry you may use
# the official postgres/redis/nginx images instead; the compose file's commands and the scripts
# below are what would need adapting.
#
#   DOCKER_BUILDKIT=0 docker build -f infra.Dockerfile -t claude-conductor-infra:latest .
ARG BASE_IMAGE=conductor-base:bookworm
FROM ${BASE_IMAGE}
ENV DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8 LC_ALL=C.UTF-8
RUN apt-get update \
 && apt-get install -y --no-install-recommends postgresql-15 redis-server nginx openssl tini \
      tinyproxy-bin \
 && apt-get clean && rm -rf /var/lib/apt/lists/* /var/cache/apt/* /var/log/apt /var/log/dpkg.log \
 && rm -rf /var/lib/postgresql/15 /etc/nginx/sites-enabled/* /etc/nginx/conf.d/* \
 && install -d -o postgres -g postgres -m 0700 /var/lib/postgresql/data \
 && install -d -o postgres -g postgres -m 0775 /var/run/postgresql \
 && install -d -o redis -g redis -m 0750 /var/lib/redis
COPY scripts/infra-postgres.sh /usr/local/bin/conductor-postgres
COPY scripts/infra-nginx.sh /usr/local/bin/conductor-nginx
COPY scripts/infra-redis.sh /usr/local/bin/conductor-redis
COPY scripts/infra-egress-proxy.sh /usr/local/bin/conductor-egress-proxy
ENV PATH=/usr/lib/postgresql/15/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
ENTRYPOINT ["/usr/bin/tini", "-g", "--"]
