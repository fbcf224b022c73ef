# FedCoin: one image for both roles.
#   docker run -v fedcoin:/data -p 8700:8700 fedcoin full --bootstrap HOST:8700
#   docker run -v fedcoin:/data fedcoin light --node http://HOST:8700 --rounds 3
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    TF_CPP_MIN_LOG_LEVEL=3 \
    FEDCOIN_HOME=/data \
    FEDCOIN_LISTEN=0.0.0.0:8700

# Mount points exist in the image, owned by the runtime user, so named volumes inherit that.
RUN useradd --create-home --uid 10001 fedcoin \
    && mkdir -p /data/node /data/shared \
    && chown -R 10001:10001 /data

WORKDIR /opt/fedcoin
COPY pyproject.toml README.md ./
COPY fedcoin ./fedcoin
RUN pip install --no-cache-dir .

USER 10001
VOLUME ["/data"]
EXPOSE 8700
ENTRYPOINT ["fedcoin"]
CMD ["full"]
