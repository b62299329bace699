# The images of a Dataflow deployment (docs/dataflow-and-airflow.md#the-worker-image-and-flex-templates).
#
#   worker    the Beam Python SDK image with this project and its pinned dependencies installed: give it
#             to every Dataflow job as --sdk_container_image. Workers install nothing at start, so they
#             need no public IP, no Cloud NAT and no PyPI. It also runs any launcher
#             (python -m pipelines.STEP), and on Flink or Spark it is the SDK harness
#             (--environment_type DOCKER --environment_config IMAGE).
#   launcher  the worker plus Dataflow's Flex Template launcher, for one template of deploy/templates/
#             (--build-arg TEMPLATE=merge-streaming); the program it runs is deploy/flex_main.py.
#
#   docker build --target worker -t REGION-docker.pkg.dev/P/REPO/backfill-worker:0.1.0 .
#   docker build --target launcher --build-arg TEMPLATE=merge-streaming \
#       -t REGION-docker.pkg.dev/P/REPO/backfill-merge-streaming:0.1.0 .
#
# The Beam and Python versions are those of constraints.txt and of the project's virtual environment
# (tests/test_deploy.py checks them). The build context holds only what is copied here (.dockerignore).

ARG TEMPLATE_LAUNCHER_IMAGE=gcr.io/dataflow-templates-base/python311-template-launcher-base

FROM ${TEMPLATE_LAUNCHER_IMAGE} AS template_launcher

FROM apache/beam_python3.11_sdk:2.77.0 AS worker
WORKDIR /opt/backfill
COPY constraints.txt setup.py ./
COPY schemas schemas
COPY transforms transforms
COPY pipelines pipelines
# The project and every dependency at the pins the tests ran with; pip check refuses a broken set.
RUN pip install --no-cache-dir -c constraints.txt . \
    && pip check \
    && python -c "import pipelines.scan, pipelines.merge, pipelines.dataflow_options, transforms.crypto.vault"
WORKDIR /
ENTRYPOINT ["/opt/apache/beam/boot"]

FROM worker AS launcher
ARG TEMPLATE
COPY --from=template_launcher /opt/google/dataflow/python_template_launcher /opt/google/dataflow/python_template_launcher
COPY deploy/flex_main.py /template/flex_main.py
ENV BACKFILL_TEMPLATE=${TEMPLATE} \
    FLEX_TEMPLATE_PYTHON_PY_FILE=/template/flex_main.py
# Fails the build when TEMPLATE names no template of deploy/flex_main.py.
RUN python /template/flex_main.py --check
