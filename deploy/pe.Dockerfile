# The example PE images, FROM scratch: weir-pe-score (tests/src/bin/weir-pe-score.rs)
# plus the shared libraries it loads, nothing else. Three tags of one binary, told
# apart by their environment (docs/containers.md):
#   weir-pe-score:v1      scores with rule v1
#   weir-pe-score:v2      scores with rule v2 (the image an upgrade moves to)
#   weir-pe-score:broken  exits with status 3 at start (a failed start, for rollbacks)
#
# Built by deploy/build-pe-images.sh from a context it prepares:
#   rootfs/   libraries at their ldd paths
#   weir-pe-score

FROM scratch AS base
COPY rootfs/ /
COPY weir-pe-score /weir-pe-score
ENTRYPOINT ["/weir-pe-score"]

FROM base AS v1
ENV WEIR_SCORE_MODEL=v1

FROM base AS v2
ENV WEIR_SCORE_MODEL=v2

FROM base AS broken
ENV WEIR_SCORE_EXIT=3
