#!/bin/sh
# Sourced by build steps: trust the build host's CA bundle (an HTTPS-intercepting proxy's, if
# any) for this step only. The bundle is in the build stage, never in the final image.
if [ -s /tmp/build/ca-bundle.crt ]; then
  export SSL_CERT_FILE=/tmp/build/ca-bundle.crt PIP_CERT=/tmp/build/ca-bundle.crt \
    REQUESTS_CA_BUNDLE=/tmp/build/ca-bundle.crt
fi
