# DiffLlama Lens as a container (also a Docker Space): non-root uid 1000, port 7860, bundled models inside.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    GRADIO_SERVER_NAME=0.0.0.0 \
    GRADIO_SERVER_PORT=7860 \
    HF_HOME=/home/user/.cache/huggingface \
    DIFFLLAMA_LENS_MODEL_DIRS=/home/user/app/assets/models

RUN useradd --create-home --uid 1000 user
WORKDIR /home/user/app

# CPU wheel of torch from PyTorch's index: the default index would pull the CUDA build
COPY --chown=user requirements.txt .
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0 \
 && pip install -r requirements.txt

COPY --chown=user app.py ./
COPY --chown=user components ./components
COPY --chown=user diffllama ./diffllama
COPY --chown=user assets ./assets

USER user
EXPOSE 7860
CMD ["python", "app.py"]
