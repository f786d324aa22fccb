# DiffLlama Lens as a container: runs as uid 1000 (or any uid) on port 7860 with the bundled models;
# code and weights belong to root and are read-only to the app. Build, run and check it (README, Docker):
#   docker build --build-arg GIT_COMMIT=$(git describe --always --dirty --abbrev=12) -t diffllama-lens .
#   docker run -p 7860:7860 --stop-timeout 30 diffllama-lens
#   scripts/docker-smoke.sh   # builds it and checks /classify as uid 1000, read-only, an arbitrary uid, SIGTERM
# A Hugging Face Docker Space needs `sdk: docker` and `app_port: 7860` in README.md's front matter
# (this repository is a Gradio Space, `sdk: gradio`, which does not use this file).
# Stopping: on SIGTERM the app closes like Ctrl-C and removes its temporary files (a few seconds on a
# busy machine); Docker kills it after 10 s by default, so give it room: --stop-timeout 30 / docker stop -t 30.

# torch's pin, read from requirements.txt (its one source): this stage's output changes only when
# that line does, so an edit elsewhere in requirements.txt keeps the torch layer below cached.
FROM python:3.11-slim AS torch-pin
COPY requirements.txt /tmp/requirements.txt
RUN grep -E '^torch==' /tmp/requirements.txt > /tmp/torch.txt

FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    GRADIO_SERVER_NAME=0.0.0.0 \
    GRADIO_SERVER_PORT=7860 \
    HF_HOME=/tmp/huggingface \
    DIFFLLAMA_LENS_MODEL_DIRS=/home/user/app/assets/models

RUN useradd --create-home --uid 1000 user

# torch alone first (1.4 GB installed): the CPU wheel from PyTorch's index (the default index would pull
# the CUDA build), its dependencies from the usual one. A mirror: --build-arg TORCH_INDEX_URL=…, and
# PIP_INDEX_URL=… for everything else (build arguments stay in the image's history: no credentials in them).
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
COPY --from=torch-pin /tmp/torch.txt /tmp/torch.txt
RUN pip install --no-deps --index-url "$TORCH_INDEX_URL" -r /tmp/torch.txt \
 && pip install -r /tmp/torch.txt

COPY requirements.txt /tmp/requirements.txt
RUN pip install -r /tmp/requirements.txt

# root-owned and read-only to the app; bytecode compiled now, since the app cannot write it
WORKDIR /home/user/app
COPY app.py ./
COPY components ./components
COPY diffllama ./diffllama
COPY assets ./assets
RUN python -m compileall -q app.py components diffllama

# the commit exports name ("app <commit>"; a container has no git history to ask)
ARG GIT_COMMIT=unknown
ENV DIFFLLAMA_LENS_COMMIT=$GIT_COMMIT
LABEL org.opencontainers.image.revision=$GIT_COMMIT \
      org.opencontainers.image.title="DiffLlama Lens"

USER user
EXPOSE 7860
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/' % os.environ['GRADIO_SERVER_PORT'], timeout=4)"
CMD ["python", "app.py"]
