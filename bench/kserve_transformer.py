"""The KServe peer of ``bench/serving.py``: a KServe Python model server in front of Triton, the
way KServe users serve a model from Triton (a transformer whose predictor is Triton over the v2
gRPC protocol). Runs in the KServe peer's own environment (``tools/install_peer_kserve.sh``),
never in Kiln's.

Answers ``POST /v1/models/<name>:predict`` with ``{"instances": [[features…], …]}`` as Kiln's
``:predict`` answers ``{"inputs": […]}``: per row the label and the class probabilities (the
Triton model's ``probabilities`` output, arg-max mapped through the label list).

    <kserve-env>/bin/python bench/kserve_transformer.py --model_name m --triton_model t \
        --labels a,b,c --predictor_host 127.0.0.1:58001 --predictor_protocol grpc-v2 \
        --http_port 8080
"""

from __future__ import annotations

import argparse
from typing import Any

import kserve
import numpy as np
from kserve import InferInput, InferRequest, InferResponse, Model, ModelServer
from kserve.model import PredictorConfig


class TritonTransformer(Model):  # type: ignore[misc]
    def __init__(
        self, name: str, triton_model: str, labels: list[str], config: PredictorConfig
    ) -> None:
        super().__init__(name, config)
        self.triton_model = triton_model
        self.labels = labels
        self.ready = True

    async def preprocess(
        self, payload: dict[str, Any] | InferRequest, headers: dict[str, str] | None = None
    ) -> InferRequest:
        if isinstance(payload, InferRequest):
            return payload
        rows = np.asarray(payload["instances"], dtype=np.float32)
        tensor = InferInput(name="features", shape=list(rows.shape), datatype="FP32")
        tensor.set_data_from_numpy(rows)
        return InferRequest(model_name=self.triton_model, infer_inputs=[tensor])

    async def postprocess(
        self,
        result: InferResponse | dict[str, Any],
        headers: dict[str, str] | None = None,
        response_headers: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        assert isinstance(result, InferResponse)
        probabilities = next(o for o in result.outputs if o.name == "probabilities").as_numpy()
        return {
            "predictions": [
                {"label": self.labels[int(np.argmax(p))], "probabilities": p.tolist()}
                for p in probabilities
            ]
        }


def main() -> None:
    parser = argparse.ArgumentParser(parents=[kserve.model_server.parser])
    parser.add_argument("--triton_model", required=True)
    parser.add_argument("--labels", required=True)
    args, _ = parser.parse_known_args()
    config = PredictorConfig(
        predictor_host=args.predictor_host, predictor_protocol=args.predictor_protocol
    )
    model = TritonTransformer(args.model_name, args.triton_model, args.labels.split(","), config)
    ModelServer(http_port=args.http_port, enable_grpc=False, workers=args.workers).start([model])


if __name__ == "__main__":
    main()
