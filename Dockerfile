# One image for the API, the Celery worker and beat; docker-compose.yml picks the command.
# The project is installed the way a developer installs it, by `make install`: the same
# /app/.venv, the same pinned, hashed versions (requirements/service.lock), runtime
# dependencies only.
FROM python:3.11-slim-bookworm

# make runs the install; numpy, orjson and hiredis ship wheels, so no compiler is needed.
RUN apt-get update \
    && apt-get install --yes --no-install-recommends make \
    && rm -rf /var/lib/apt/lists/*

# A fixed uid, so that volume ownership and Kubernetes' runAsNonRoot can rely on it.
RUN groupadd --gid 10001 app \
    && useradd --uid 10001 --gid app --create-home --shell /usr/sbin/nologin app

WORKDIR /app
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

# The dependency layer, rebuilt only when Makefile, pyproject.toml, README.md or the lock change.
# The distribution installs one package, predictions (api/, worker/ and the rest run from
# /app, the working directory). An editable install needs it to exist, so an empty
# stand-in takes its place here; the install finds it by its path (/app/predictions), so
# the real code copied below replaces it without a reinstall.
COPY Makefile pyproject.toml README.md ./
# The exact versions, with hashes: the image installs what CI tested.
COPY requirements/service.lock requirements/
RUN mkdir predictions \
    && touch predictions/__init__.py \
    && PIP_NO_CACHE_DIR=1 make install \
    && rm -rf predictions prediction_cache.egg-info

# The code, owned by root and only readable by the app user, which cannot change it.
COPY predictions/ predictions/
COPY api/ api/
COPY worker/ worker/
# The worked examples, so that MODEL=examples.template_model:TemplateModel works in the
# image (the scikit-learn one also needs the `examples` extra and a trained artifact).
COPY examples/ examples/
COPY beat_schedule.py gunicorn.conf.py ./

# gunicorn.conf.py reads API_BIND, the worker WORKER_METRICS_BIND: inside a container
# both must listen beyond loopback, or nothing on the network could reach or scrape
# them (neither port is published on the host by docker-compose.yml).
ENV API_BIND=0.0.0.0:8000 \
    WORKER_METRICS_BIND=0.0.0.0:9808
EXPOSE 8000 9808

USER 10001:10001
CMD ["gunicorn", "api.wsgi:app"]
