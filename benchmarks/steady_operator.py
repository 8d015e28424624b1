"""rightsizer with every SageMaker job in progress, for benchmarks/operator_scale.py --steady.

Run by the benchmark as `python benchmarks/steady_operator.py NAMESPACE COUNTS_FILE`. Each SageMaker client is a
real botocore client (requests signed with test keys, the operator's rate limit at before-send, botocore's
retries) whose HTTP answers come from a handler registered after the operator's: Create returns an ARN, every
Describe says IN_PROGRESS, ListInferenceRecommendationsJobSteps is empty. Nothing is sent anywhere. The
requests answered are counted per second of arrival into COUNTS_FILE (one JSON list), rewritten every 5 s.
"""

from __future__ import annotations

import datetime
import json
import sys
import threading
import time
from pathlib import Path

import boto3
import botocore.awsrequest
import kopf

from rightsizer import handlers  # noqa: F401  (registers the handlers)
from rightsizer.backends.sagemaker import client as sagemaker_client

ARRIVALS: list[float] = []
LOCK = threading.Lock()


class Body:
    def __init__(self, payload: dict) -> None:
        self.payload = json.dumps(payload).encode()

    def stream(self, **_: object):
        yield self.payload


def answer(request: botocore.awsrequest.AWSPreparedRequest, **_: object) -> botocore.awsrequest.AWSResponse:
    with LOCK:
        ARRIVALS.append(time.monotonic())
    operation = request.headers["X-Amz-Target"].decode().rsplit(".", 1)[1]
    sent = json.loads(request.body or b"{}")
    now = datetime.datetime.now(datetime.timezone.utc).timestamp()
    if operation == "CreateInferenceRecommendationsJob":
        payload = {"JobArn": f"arn:aws:sagemaker:us-east-1:111122223333:inference-recommendations-job/"
                             f"{sent['JobName'].lower()}"}
    elif operation == "DescribeInferenceRecommendationsJob":
        payload = {"JobName": sent["JobName"], "JobType": "Advanced", "Status": "IN_PROGRESS",
                   "JobArn": f"arn:aws:sagemaker:us-east-1:111122223333:inference-recommendations-job/"
                             f"{sent['JobName'].lower()}",
                   "RoleArn": "arn:aws:iam::111122223333:role/r", "CreationTime": now, "LastModifiedTime": now,
                   "InputConfig": {}}
    else:
        payload = {"Steps": []}
    return botocore.awsrequest.AWSResponse(request.url, 200, {"content-type": "application/x-amz-json-1.1"},
                                           Body(payload))


def factory(region: str):
    made = boto3.session.Session(aws_access_key_id="testing", aws_secret_access_key="testing").client(
        "sagemaker", region_name=region, config=sagemaker_client.RETRY_CONFIG)
    made.meta.events.register("before-send.sagemaker", answer)
    return made


def write_counts(path: Path) -> None:
    while True:
        time.sleep(5)
        with LOCK:
            arrivals = list(ARRIVALS)
        path.write_text(json.dumps(arrivals))


def main() -> None:
    namespace, counts = sys.argv[1], Path(sys.argv[2])
    sagemaker_client.use_client_factory(factory)
    threading.Thread(target=write_counts, args=(counts,), daemon=True).start()
    kopf.run(standalone=True, namespaces=[namespace])


if __name__ == "__main__":
    main()
