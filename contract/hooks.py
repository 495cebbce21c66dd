"""Schemathesis hooks for contract/run.sh (loaded through SCHEMATHESIS_HOOKS).

`positive_data_accepted` replaces Schemathesis' own `positive_data_acceptance`
check with a stricter reading of the contract: a request the document calls
valid must be accepted, and the only refusals allowed are the ones that
depend on the account's data or join two parameters, which no schema can
state. Each is recognised by the server's message, so a refusal for any
other reason (a rule the document fails to state) still fails the run.
"""

import json
import re
import uuid

import schemathesis

# Refusals no schema can foresee, by the server's own wording.
SEMANTIC_REFUSALS = [
    # A well-formed id that names nothing in this account (422, or 404 in a path).
    re.compile(r"no [a-z ]+ with id `[^`]*`"),
    # A message's sender or a pinned message that is not part of the conversation.
    re.compile(r"is not (a participant|part) of"),
    # The two cursors exclude each other (query parameters cannot say so).
    re.compile(r"^give starting_after or ending_before, not both$"),
    # An idempotency key reused with another body: state, not shape.
    re.compile(r"^Idempotency-Key `.*` was already used with a different request"),
    # Custom headers: a masked value keeps a stored one, which must exist;
    # names that differ only in case, and the size of all of them together,
    # join several headers.
    re.compile(r"^headers: the value of `.*` is a masked value, and no header of that name has it"),
    re.compile(r"^headers: `.*` and `.*` are the same header \(names are case-insensitive\)"),
    re.compile(r"^headers: \d+ bytes of names and values in all; at most 8192"),
    # A content filter's size and depth: JSON Schema bounds neither.
    re.compile(r"^filter: \d+ bytes; at most 4096"),
    re.compile(r"^filter: nested more than 10 levels deep"),
    # A replay's window: its start against the clock, and its two ends
    # against each other.
    re.compile(r"^since is in the future: a replay sends events already written$"),
    re.compile(r"^until must not be before since$"),
]

# Statuses that are never a shape refusal: conflicts with existing data,
# not found, throttling. 5xx are failed by `not_a_server_error`.
NOT_SHAPE_REFUSALS = {401, 403, 404, 409, 429}


@schemathesis.check
def positive_data_accepted(ctx, response, case):
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive:
        return None
    status = response.status_code
    if status < 400 or status >= 500 or status in NOT_SHAPE_REFUSALS:
        return None
    try:
        message = json.loads(response.content)["message"]
    except (ValueError, KeyError, TypeError):
        message = ""
    if any(p.search(message) for p in SEMANTIC_REFUSALS):
        return None
    raise AssertionError(
        f"a request the document calls valid was refused with {status}: {message}"
    )


# What the server takes as an Idempotency-Key (validate::IDEMPOTENCY_KEY).
VALID_IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7E]{1,255}$")


@schemathesis.hook
def before_call(ctx, case, kwargs):
    """Gives every valid generated Idempotency-Key a fresh value in stateful runs.

    Generated keys repeat ("0", "a", …). A repeated key with the same body
    correctly replays the first response, even after that resource was
    deleted, which the stateful checks would read as a created resource that
    is not found. Invalid keys are left alone, so their refusal is still
    tested; replays themselves are tested by the Rust suite
    (crates/notifly-server/tests/it/api_idempotency.rs).
    """
    # Only where resources are created and then used: the stateful phase.
    # (The coverage phase's cases are about the headers as generated.)
    if case.meta is None or case.meta.phase.name != "stateful" or not case.headers:
        return
    headers = case.headers
    for name in list(headers):
        if name.lower() == "idempotency-key" and VALID_IDEMPOTENCY_KEY.match(str(headers[name])):
            headers[name] = uuid.uuid4().hex
