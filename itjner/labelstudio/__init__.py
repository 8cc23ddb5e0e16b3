"""The Label Studio loop: tasks (format, no server), client (SDK calls), outbox (nothing lost), cli."""
from .client import (DEFAULT_URL, LabelStudioAuthError, LabelStudioClient, LabelStudioError, LabelStudioTimeout,
                     LabelStudioUnavailable, PushResult, connect, scrub)
from .outbox import Outbox
from .tasks import (LABEL_CONFIG, build_tasks, compute_task_key, entity_results, export_tasks_json, image_data_url,
                    latest_annotation, result_to_entities, task_from_prediction, task_tokens, tweet_from_task)

__all__ = ["DEFAULT_URL", "LABEL_CONFIG", "LabelStudioAuthError", "LabelStudioClient", "LabelStudioError",
           "LabelStudioTimeout", "LabelStudioUnavailable", "Outbox", "PushResult", "build_tasks", "compute_task_key",
           "connect", "entity_results", "export_tasks_json", "image_data_url", "latest_annotation",
           "result_to_entities", "scrub", "task_from_prediction", "task_tokens", "tweet_from_task"]
