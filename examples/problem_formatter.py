import json
from typing import Any

from apiguard import Problem, set_problem_formatter


def company_errors(problem: Problem, scope: dict[str, Any]) -> tuple[str, bytes]:
    """Every layer's rejections in the format our clients already parse."""
    body = {
        "error": {
            "status": problem.status,
            "code": problem.type.rsplit("#", 1)[-1] if "#" in problem.type else problem.title,
            "message": problem.detail or problem.title,
            "path": scope["path"],
        }
    }
    return "application/json", json.dumps(body).encode()


set_problem_formatter(company_errors)  # once, for all layers
