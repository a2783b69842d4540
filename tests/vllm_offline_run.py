"""Run in the vLLM venv by tests/test_vllm_offline.py (PYTHONPATH=repo root): mckd's annotate node with
teacher.backend=vllm-offline, twice — the second time every row is cached — and print what happened as JSON.

Usage: python tests/vllm_offline_run.py '<json: {"rows": ParquetRef, "demos": ParquetRef, "teacher": TeacherConfig,
       "out_dir": str, "cache": str}>'
"""

from __future__ import annotations

import json
import sys


def main(spec: dict) -> dict:
    from mckd_core.config import TeacherConfig
    from mckd_core.data import ParquetRef
    from mckd_core.jobs import AnnotateJob
    from mckd_core.steps import annotate_rows, teacher_backend, teacher_session

    cfg = TeacherConfig.model_validate(spec["teacher"])
    rows, demos = ParquetRef(**spec["rows"]), ParquetRef(**spec["demos"])
    runs = []
    for _ in range(2):
        with teacher_session():
            job = AnnotateJob(
                examples=rows,
                demos=demos,
                teacher=cfg,
                task="slots",
                seed=0,
                out_dir=spec["out_dir"],
                cache_path=spec["cache"],
            )
            ref, stats = annotate_rows(job)
            engine_built = teacher_backend(cfg)._llm is not None
        labels = ref.read()
        runs.append(
            {
                "stats": {k: stats[k] for k in ("requested", "cached", "valid", "invalid")},
                "engine_built": engine_built,
                "raw": list(labels["raw"]),
                "valid": [bool(v) for v in labels["valid"]],
            }
        )
    return {"runs": runs, "engine_freed": teacher_backend(cfg)._llm is None}


if __name__ == "__main__":  # vLLM's engine core is a child process: nothing may run at import
    print("RESULT " + json.dumps(main(json.loads(sys.argv[1]))))
