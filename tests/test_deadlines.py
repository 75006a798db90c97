"""``Grpc-Timeout`` below a millisecond: honoured as the deadline it is, not dropped.

gRPC does not keep deadlines under a millisecond, so ``1n`` or ``1u`` sent to a
quick Cuebot used to succeed as if no deadline had been given. A deadline
that close has passed before Cuebot could answer: 504 DEADLINE_EXCEEDED at
once, without calling it.
"""
from __future__ import annotations

from typing import Any

import orjson
import pytest

from support import RecordingCuebot, raw_request

FIND_SHOW = "/show.ShowInterface/FindShow"


@pytest.mark.parametrize("value", ["1n", "999999n", "1u", "999u", "0n", "0u", "0m", "0S",
                                   "0M", "0H"])
async def test_sub_millisecond_deadline_fails_at_once(make_gateway: Any, cuebot: RecordingCuebot,
                                                      value: str) -> None:
    gw = await make_gateway()
    status, _h, body = await raw_request(gw.port, "POST", FIND_SHOW, b'{"name": "x"}',
                                         headers={"Grpc-Timeout": value})
    data = orjson.loads(body)
    assert status == 504, data
    assert data["code"] == 4 and data["message"].startswith("Deadline Exceeded")
    assert cuebot.calls == []


@pytest.mark.parametrize("value", ["500m", "500000u", "50000000n", "5S", "1M", "1H"])
async def test_deadlines_from_a_millisecond_reach_cuebot(make_gateway: Any,
                                                         cuebot: RecordingCuebot,
                                                         value: str) -> None:
    gw = await make_gateway()
    status, _h, body = await raw_request(gw.port, "POST", FIND_SHOW, b'{"name": "x"}',
                                         headers={"Grpc-Timeout": value})
    assert status == 200, body
    assert [c.path for c in cuebot.calls] == [FIND_SHOW]


async def test_sub_millisecond_deadline_on_the_resource_routes(make_gateway: Any,
                                                               cuebot: RecordingCuebot) -> None:
    gw = await make_gateway()
    status, _h, body = await raw_request(gw.port, "GET", "/api/show", headers={"Grpc-Timeout": "1u"})
    assert status == 504 and orjson.loads(body)["code"] == 4
    assert cuebot.calls == []
