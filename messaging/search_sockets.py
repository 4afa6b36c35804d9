"""Socket handler of message search on /messages (`message:search`); the namespace composes it
beside `MessageHandlers` (namespaces/messages.py)."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from messaging.search import SearchPage
from messaging.service import Messaging
from server.auth import Principal
from server.errors import Code
from server.sockets import Namespace, handles


class SearchReq(BaseModel):
    model_config = ConfigDict(extra="forbid")

    conversation_id: uuid.UUID
    query: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    limit: Annotated[int, Field(ge=1, le=50)] = 20
    before_seq: Annotated[int, Field(ge=1)] | None = None


class SearchHandlers(Namespace):
    """`message:search`; `messaging` is handed in by the namespace."""

    messaging: Messaging

    @handles(
        "message:search",
        SearchReq,
        ack=SearchPage,
        errors=(Code.FORBIDDEN, Code.NOT_FOUND),
        example={"conversation_id": "<conversation_id>", "query": "see you at eig", "limit": 20},
    )
    async def search(self, sid: str, p: Principal, req: SearchReq) -> Any:
        """Search a conversation's messages you can see: every word, the last as a prefix;
        newest first."""
        return await self.messaging.search.search(
            p.user_id, str(req.conversation_id), req.query, req.before_seq, req.limit
        )
