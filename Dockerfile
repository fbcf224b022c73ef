# FedCoin: one Dockerfile, two targets.
#   fedcoin (default, last stage): every role, with TensorFlow for the FL server (`light`).
#   validator: full nodes and wallet commands only, without TensorFlow/scikit-learn/matplotlib.
# Build (BASE is any Debian-like image with Python 3.11 in /usr/local/bin, default the official):
#   docker build -t fedcoin .
#   docker build --target validator -t fedcoin-validator .
# Run (the image's own example, tested by tests/application/test_docker.py):
#   docker run --rm -v fedcoin:/data fedcoin keygen --out /data/node/node.pem
#   docker run --rm -v fedcoin:/data fedcoin genesis --validator /data/node/node.pem=100 --out /data/node/genesis.json
#   docker run -d --name fedcoin -v fedcoin:/data -p 127.0.0.1:8700:8700 fedcoin
# With a host folder instead of a volume, run as its owner: --user "$(id -u):$(id -g)".
ARG BASE=python:3.11-slim

FROM ${BASE} AS common
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TF_CPP_MIN_LOG_LEVEL=3 \
    TF_ENABLE_ONEDNN_OPTS=0 \
    FEDCOIN_HOME=/data \
    FEDCOIN_LISTEN=0.0.0.0:8700
# The data folders are writable by any user (sticky, like /tmp), so a named volume works
# both for the image's own user and for `--user "$(id -u):$(id -g)"`.
RUN useradd --create-home --uid 10001 fedcoin \
    && mkdir -p /data/node /data/light /data/shared \
    && chmod 1777 /data /data/node /data/light /data/shared
WORKDIR /opt/fedcoin
COPY pyproject.toml README.md ./

# The validator installs the project's pinned dependencies except the FL stack.
FROM common AS validator
RUN python -c "import tomllib; deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; skip = ('tensorflow', 'scikit-learn', 'matplotlib'); print('\n'.join(d for d in deps if not d.startswith(skip)))" > /tmp/requirements.txt \
    && pip install --no-cache-dir -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt
COPY fedcoin ./fedcoin
RUN pip install --no-cache-dir --no-deps .
USER 10001
EXPOSE 8700
ENTRYPOINT ["fedcoin"]
CMD ["full"]

# The full image: dependencies first (cached while only the code changes), then the code.
FROM common AS fedcoin
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
    && pip install --no-cache-dir -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt
COPY fedcoin ./fedcoin
RUN pip install --no-cache-dir --no-deps .
USER 10001
EXPOSE 8700
ENTRYPOINT ["fedcoin"]
CMD ["full"]
