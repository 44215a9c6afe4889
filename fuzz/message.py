"""Target: header splitting (sendgate/policy/message.py).
Properties: split_message and delete_fields raise nothing; the body is a
suffix of the input; deleting no field gives the input back byte for byte;
deleting every field leaves what split_message calls the body (with its
separator line, if any); apply_edits of a deletion removes exactly one
field."""

import atheris

from common import Finding, corpus_messages, main

with atheris.instrument_imports(include=["sendgate"]):
    from sendgate.policy.message import ChangeHeader, apply_edits, delete_fields, split_message


def one_input(data: bytes) -> None:
    header, body = split_message(data)
    if not data.endswith(body):
        raise Finding("body is not the end of the input")
    if delete_fields(data, ()) != data:
        raise Finding("delete_fields(()) changed the message")
    rest = delete_fields(data, range(len(header)))
    if not rest.endswith(body) or split_message(rest)[0]:
        raise Finding("deleting every field left a field")
    if header:
        edited = apply_edits(header, [ChangeHeader(header[0].name, 1, "")])
        if len(edited) != len(header) - 1:
            raise Finding("deleting a field did not remove one field")
        again = split_message(delete_fields(data, (0,)))[0]
        if again != header[1:]:
            raise Finding("delete_fields((0,)) and split_message disagree")


def seeds() -> list[bytes]:
    return corpus_messages()


if __name__ == "__main__":
    main(one_input, seeds)
