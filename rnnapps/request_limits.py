"""Bounds on what one request to an exported signature may cost, checked in the graph.

A served model sits behind a public endpoint: a request that asks for ``2**31``
characters, a million samples or a batch of a million reviews must be refused at
once, before anything is allocated, and the server must go on answering. Every
signature of every pipeline therefore starts by checking its inputs against limits
from the pipeline's config (recorded in the export's ``assets.extra/rnnapps.json``
under ``request_limits``), and fails with ``InvalidArgumentError`` whose message
names the input, the value it got and the limit::

    text: a batch of 5000 is over max_request_batch=1024

The checks are ``tf.debugging.Assert`` ops, and :func:`guarded` makes the
signature's inputs depend on them, so nothing downstream (a ``TensorArray`` of
``length`` elements, a canvas of ``num`` images) runs before they pass. They use
core TensorFlow ops only, so TensorFlow Serving's C++ loader runs them too.
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

PREFIX = "request refused: "


def _refuse_unless(condition, template: str, *values) -> tf.Operation:
    message = tf.strings.format(PREFIX + template, [tf.convert_to_tensor(value) for value in values])
    return tf.debugging.Assert(condition, [message])


def batch_at_most(tensor, input_name: str, limit: int, limit_name: str = "max_request_batch") -> tf.Operation:
    """``tensor``'s first dimension (its batch) is at most ``limit``."""
    batch = tf.shape(tensor)[0]
    return _refuse_unless(batch <= limit, f"{input_name}: a batch of {{}} is over {limit_name}={limit}", batch)


def dimension_at_most(tensor, axis: int, input_name: str, what: str, limit: int, limit_name: str) -> tf.Operation:
    """``tensor``'s dimension ``axis`` is at most ``limit`` (e.g. tokens per sentence)."""
    size = tf.shape(tensor)[axis]
    return _refuse_unless(size <= limit, f"{input_name}: {{}} {what} is over {limit_name}={limit}", size)


def count_within(value, input_name: str, limit: int, limit_name: str, minimum: int = 0) -> tf.Operation:
    """Every element of the integer ``value`` lies in ``[minimum, limit]``; reports the worst offender."""
    value = tf.cast(tf.reshape(value, [-1]), tf.int64)
    largest = tf.reduce_max(tf.concat([value, [minimum]], axis=0))
    smallest = tf.reduce_min(tf.concat([value, [minimum]], axis=0))
    below = "is negative" if minimum == 0 else f"is below {minimum}"
    return tf.group(
        _refuse_unless(smallest >= minimum, f"{input_name}={{}} {below}; it must be in [{minimum}, {limit}]", smallest),
        _refuse_unless(largest <= limit, f"{input_name}={{}} is over {limit_name}={limit}", largest),
    )


def finite_at_least_zero(value, input_name: str) -> tf.Operation:
    """Every element of the float ``value`` is finite and not negative (a temperature)."""
    value = tf.cast(tf.reshape(value, [-1]), tf.float32)
    bad = tf.logical_not(tf.math.is_finite(value)) | (value < 0)
    # The first bad element, or 0 when there is none (the message is only built for show then).
    first_bad = tf.concat([tf.boolean_mask(value, bad), [0.0]], axis=0)[0]
    return _refuse_unless(
        tf.logical_not(tf.reduce_any(bad)), f"{input_name}={{}} must be a finite number >= 0", first_bad
    )


def text_length_at_most(text, input_name: str, limit: int, limit_name: str, unit: str = "BYTE") -> tf.Operation:
    """No string of ``text`` is longer than ``limit`` (bytes, or ``unit="UTF8_CHAR"`` characters)."""
    lengths = tf.reshape(tf.strings.length(text, unit=unit), [-1])
    longest = tf.reduce_max(tf.concat([lengths, [0]], axis=0))
    what = "bytes" if unit == "BYTE" else "characters"
    return _refuse_unless(
        longest <= limit, f"{input_name}: a string of {{}} {what} is over {limit_name}={limit}", longest
    )


def guarded(checks: Sequence[tf.Operation], *tensors):
    """``tensors`` made to depend on ``checks``: what reads them runs only once every check has passed."""
    with tf.control_dependencies(list(checks)):
        guarded_tensors = tuple(tf.identity(tensor) for tensor in tensors)
    return guarded_tensors[0] if len(guarded_tensors) == 1 else guarded_tensors


def text_request(text, config):
    """A batch of strings checked against ``max_request_batch`` and ``max_text_bytes``."""
    return guarded(
        [
            batch_at_most(text, "text", config.max_request_batch),
            text_length_at_most(text, "text", config.max_text_bytes, "max_text_bytes"),
        ],
        text,
    )
