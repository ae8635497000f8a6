"""boto3's bedrock-runtime client against a Tollgate edge over HTTPS, changed only in
`endpoint_url`: Converse, ConverseStream, InvokeModel and InvokeModelWithResponseStream, with a
bearer token (AWS_BEARER_TOKEN_BEDROCK) and with SigV4 (access key id = the virtual key's id,
secret access key = its secret).

Run by edge/tests/bedrock_surface.rs, which passes:
  TOLLGATE_ENDPOINT   the edge's https:// URL
  TOLLGATE_CA         the CA certificate the edge's certificate is signed by
  TOLLGATE_KEY_ID     a virtual key's id, and TOLLGATE_KEY its secret
  TOLLGATE_MODELS     model=answer pairs, comma-separated: each model is served by a different
                      provider kind, and answers that text
  TOLLGATE_ALIASES    Bedrock model ids and ARNs that name the first model
  TOLLGATE_EMBEDDING_MODELS  embedding models, comma-separated, one per provider kind
  TOLLGATE_PHASE      `serve` (every operation, both ways of signing) or `refuse` (requests the
                      edge must refuse before anything goes upstream; needs
                      TOLLGATE_REVOKED_KEY_ID / TOLLGATE_REVOKED_KEY, a revoked key)
Plain asserts; one line per check; exit status 0 when all pass.
"""

import base64
import datetime
import json
import os
import sys
from unittest import mock

import sdk_check
from sdk_check import TOOL_DESCRIPTION, TOOL_INPUT, TOOL_NAME, TOOL_PARAMETERS, check, models

try:
    import boto3
    import botocore.auth
    from botocore.awsrequest import AWSRequest
    from botocore.config import Config
    from botocore.credentials import Credentials
    from botocore.exceptions import ClientError
    import urllib3
except ImportError:
    print("boto3 is not installed: run `pip install boto3`", file=sys.stderr)
    sys.exit(2)

ENDPOINT = os.environ["TOLLGATE_ENDPOINT"]
CA = os.environ["TOLLGATE_CA"]
KEY_ID = os.environ["TOLLGATE_KEY_ID"]
KEY = os.environ["TOLLGATE_KEY"]
MODELS = models()
ALIASES = [a for a in os.environ.get("TOLLGATE_ALIASES", "").split(",") if a]
EMBEDDING_MODELS = [m for m in os.environ.get("TOLLGATE_EMBEDDING_MODELS", "").split(",") if m]
REGION = "us-east-1"
WEATHER_TOOL = {
    "tools": [
        {"toolSpec": {"name": TOOL_NAME, "description": TOOL_DESCRIPTION, "inputSchema": {"json": TOOL_PARAMETERS}}}
    ]
}
QUESTION = [{"role": "user", "content": [{"text": "Say hello to the gateway"}]}]

def client(auth, key_id=KEY_ID, key=KEY, retries=3):
    """A bedrock-runtime client as an application makes one, signing with `auth`."""
    config = Config(retries={"max_attempts": retries, "mode": "standard"})
    if auth == "bearer":
        # botocore reads the token when it signs each request: it stays set while this client
        # is used.
        os.environ["AWS_BEARER_TOKEN_BEDROCK"] = key
        return boto3.client(
            "bedrock-runtime", region_name=REGION, endpoint_url=ENDPOINT, verify=CA, config=config
        )
    os.environ.pop("AWS_BEARER_TOKEN_BEDROCK", None)
    return boto3.client(
        "bedrock-runtime",
        region_name=REGION,
        endpoint_url=ENDPOINT,
        verify=CA,
        aws_access_key_id=key_id,
        aws_secret_access_key=key,
        config=config,
    )


def converse(c, model, answer, how):
    out = c.converse(modelId=model, messages=QUESTION, inferenceConfig={"maxTokens": 64})
    text = "".join(b.get("text", "") for b in out["output"]["message"]["content"])
    assert text == answer, out
    assert out["stopReason"] == "end_turn", out
    assert out["usage"]["inputTokens"] > 0 and out["usage"]["outputTokens"] > 0, out
    check(f"{how}: converse {model}")


def converse_tools(c, model, how):
    first = c.converse(modelId=model, messages=QUESTION, toolConfig=WEATHER_TOOL)
    assert first["stopReason"] == "tool_use", first
    uses = [b["toolUse"] for b in first["output"]["message"]["content"] if "toolUse" in b]
    assert len(uses) == 1 and uses[0]["name"] == "get_weather", first
    assert uses[0]["input"] == TOOL_INPUT, uses
    messages = QUESTION + [
        first["output"]["message"],
        {
            "role": "user",
            "content": [
                {"toolResult": {"toolUseId": uses[0]["toolUseId"], "content": [{"json": {"sky": "clear"}}]}}
            ],
        },
    ]
    second = c.converse(modelId=model, messages=messages, toolConfig=WEATHER_TOOL)
    text = second["output"]["message"]["content"][0]["text"]
    assert text.startswith("The tool said:") and "clear" in text, second
    check(f"{how}: converse tool round trip {model}")


def converse_stream(c, model, answer, how):
    out = c.converse_stream(modelId=model, messages=QUESTION)
    kinds, text, stop, usage = [], "", None, None
    for event in out["stream"]:
        kind = next(iter(event))
        kinds.append(kind)
        if kind == "contentBlockDelta":
            text += event[kind]["delta"].get("text", "")
        elif kind == "messageStop":
            stop = event[kind]["stopReason"]
        elif kind == "metadata":
            usage = event[kind]["usage"]
    assert kinds[0] == "messageStart" and kinds[-1] == "metadata", kinds
    assert text == answer and stop == "end_turn", (text, stop)
    assert usage["inputTokens"] > 0 and usage["outputTokens"] > 0, usage
    check(f"{how}: converse_stream {model}")

    out = c.converse_stream(modelId=model, messages=QUESTION, toolConfig=WEATHER_TOOL)
    started, arguments, stop = None, "", None
    for event in out["stream"]:
        if "contentBlockStart" in event:
            started = event["contentBlockStart"]["start"]["toolUse"]
        elif "contentBlockDelta" in event:
            arguments += event["contentBlockDelta"]["delta"].get("toolUse", {}).get("input", "")
        elif "messageStop" in event:
            stop = event["messageStop"]["stopReason"]
    assert started["name"] == "get_weather" and started["toolUseId"], started
    assert json.loads(arguments) == TOOL_INPUT and stop == "tool_use", (arguments, stop)
    check(f"{how}: converse_stream tool use {model}")


def anthropic_body():
    return json.dumps(
        {
            "anthropic_version": "bedrock-2023-05-31",
            "max_tokens": 64,
            "messages": [{"role": "user", "content": "Say hello to the gateway"}],
        }
    )


def invoke(c, model, answer, how):
    out = c.invoke_model(modelId=model, body=anthropic_body())
    message = json.loads(out["body"].read())
    assert message["type"] == "message" and message["role"] == "assistant", message
    assert message["content"][0]["text"] == answer, message
    assert message["stop_reason"] == "end_turn" and message["usage"]["output_tokens"] > 0, message
    check(f"{how}: invoke_model (Anthropic body) {model}")


def invoke_embeddings(c, model, how):
    out = c.invoke_model(modelId=model, body=json.dumps({"inputText": "embed me"}))
    embedding = json.loads(out["body"].read())
    assert len(embedding["embedding"]) > 0 and embedding["inputTextTokenCount"] > 0, embedding
    out = c.invoke_model(modelId=model, body=json.dumps({"texts": ["a", "b"], "input_type": "search_document"}))
    embeddings = json.loads(out["body"].read())
    assert len(embeddings["embeddings"]) == 2 and embeddings["texts"] == ["a", "b"], embeddings
    check(f"{how}: invoke_model (Titan and Cohere embeddings bodies) {model}")


def invoke_stream(c, model, answer, how):
    out = c.invoke_model_with_response_stream(modelId=model, body=anthropic_body())
    kinds, text, metrics = [], "", None
    for event in out["body"]:
        chunk = json.loads(event["chunk"]["bytes"])
        kinds.append(chunk["type"])
        if chunk["type"] == "content_block_delta":
            text += chunk["delta"]["text"]
        if chunk["type"] == "message_stop":
            metrics = chunk["amazon-bedrock-invocationMetrics"]
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop", kinds
    assert "message_delta" in kinds and text == answer, (kinds, text)
    assert metrics["inputTokenCount"] > 0 and metrics["outputTokenCount"] > 0, metrics
    check(f"{how}: invoke_model_with_response_stream {model}")


def apply_guardrail(c, how):
    def apply(guardrail, text):
        return c.apply_guardrail(
            guardrailIdentifier=guardrail, guardrailVersion="DRAFT", source="INPUT",
            content=[{"text": {"text": text}}],
        )

    masked = apply("pii-mask", "write to jane@example.com today")
    assert masked["action"] == "GUARDRAIL_INTERVENED", masked
    assert "jane@example.com" not in masked["outputs"][0]["text"], masked
    assert apply("pii-mask", "nothing personal")["action"] == "NONE"
    blocked = apply("no-forbidden", "this is forbidden")
    assert blocked["action"] == "GUARDRAIL_INTERVENED" and blocked["actionReason"], blocked
    try:
        apply("no-such-guardrail", "text")
        raise AssertionError("an unknown guardrail was applied")
    except ClientError as e:
        assert e.response["Error"]["Code"] == "ResourceNotFoundException", e.response
    check(f"{how}: apply_guardrail runs Tollgate's guardrails")


def serve():
    first_model, first_answer = next(iter(MODELS.items()))
    for how in ("bearer", "sigv4"):
        c = client(how)
        for model, answer in MODELS.items():
            converse(c, model, answer, how)
            converse_tools(c, model, how)
            converse_stream(c, model, answer, how)
            invoke(c, model, answer, how)
            invoke_stream(c, model, answer, how)
        for model in EMBEDDING_MODELS:
            invoke_embeddings(c, model, how)
        apply_guardrail(c, how)
        for alias in ALIASES:
            converse(c, alias, first_answer, f"{how} (alias of {first_model})")
        try:
            c.converse(modelId="no-such-model", messages=QUESTION)
            raise AssertionError("an unknown model was answered")
        except ClientError as e:
            assert e.response["Error"]["Code"] == "ResourceNotFoundException", e.response
        try:
            document = {"format": "pdf", "name": "report", "source": {"bytes": b"%PDF-1.4"}}
            c.converse(modelId=first_model, messages=[{"role": "user", "content": [{"document": document}]}])
            raise AssertionError("a block the gateway cannot translate was accepted")
        except ClientError as e:
            assert e.response["Error"]["Code"] == "ValidationException", e.response
            assert "messages[0].content[0]" in e.response["Error"]["Message"], e.response
        check(f"{how}: errors have Bedrock's codes")


def refused(call, code, contains=""):
    try:
        call()
    except ClientError as e:
        got = e.response["Error"]
        assert got["Code"] == code, got
        assert contains in got["Message"], got
        return
    raise AssertionError(f"expected {code}, but the call was answered")


def refuse():
    model = next(iter(MODELS))
    ask = lambda c: (lambda: c.converse(modelId=model, messages=QUESTION))  # noqa: E731

    wrong = client("sigv4", key="tg-not-the-secret", retries=1)
    refused(ask(wrong), "InvalidSignatureException", "does not match")
    check("a signature made with the wrong secret is refused")

    late = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=10)
    with mock.patch("botocore.auth.get_current_datetime", return_value=late.replace(tzinfo=None)):
        refused(ask(client("sigv4", retries=1)), "InvalidSignatureException", "expired")
    check("a signature dated ten minutes ago is refused")

    revoked_id, revoked = os.environ["TOLLGATE_REVOKED_KEY_ID"], os.environ["TOLLGATE_REVOKED_KEY"]
    refused(ask(client("sigv4", key_id=revoked_id, key=revoked, retries=1)), "UnrecognizedClientException")
    refused(ask(client("bearer", key=revoked, retries=1)), "UnrecognizedClientException")
    check("a revoked key is refused, signed or as a bearer token")

    # A replay: the same signed request sent twice; only the first is served.
    url = f"{ENDPOINT}/model/{model}/converse"
    body = json.dumps({"messages": QUESTION}).encode()
    request = AWSRequest(method="POST", url=url, data=body, headers={"Content-Type": "application/json"})
    botocore.auth.SigV4Auth(Credentials(KEY_ID, KEY), "bedrock", REGION).add_auth(request)
    http = urllib3.PoolManager(ca_certs=CA, cert_reqs="CERT_REQUIRED")
    headers = dict(request.headers.items())
    first = http.request("POST", url, body=body, headers=headers)
    assert first.status == 200, first.data
    again = http.request("POST", url, body=body, headers=headers)
    assert again.status == 403, again.data
    assert again.headers["x-amzn-errortype"] == "InvalidSignatureException", again.headers
    assert b"already received" in again.data, again.data
    check("a replayed signed request is refused")

    # The body signed is the body sent.
    tampered = http.request("POST", url, body=body.replace(b"hello", b"HELLO"), headers=headers)
    assert tampered.status == 403 and b"does not match" in tampered.data, tampered.data
    check("a signed request whose body was changed is refused")


{"serve": serve, "refuse": refuse}[os.environ["TOLLGATE_PHASE"]]()
print(f"{sdk_check.passed} checks passed")
