"""The application's NotificationConsumer, written as the contract
describes it: the token from the subprotocol first, then the `access`
cookie, then `?token=`; HS256 JWTs signed with SECRET_KEY carrying
`user_id`; group `notifications_{user_id}`; `send_notification` events
forwarded as {"type": "notification", "data": ...}."""

from http.cookies import SimpleCookie
from urllib.parse import parse_qs

from channels.generic.websocket import AsyncJsonWebsocketConsumer
from rest_framework_simplejwt.exceptions import TokenError
from rest_framework_simplejwt.tokens import AccessToken


def find_token(scope):
    subprotocols = scope.get("subprotocols") or []
    if subprotocols:
        return subprotocols[0], subprotocols[0]
    for name, value in scope.get("headers", []):
        if name == b"cookie":
            cookie = SimpleCookie(value.decode("latin-1"))
            if "access" in cookie:
                return cookie["access"].value, None
    query = parse_qs(scope.get("query_string", b"").decode())
    if query.get("token"):
        return query["token"][0], None
    return None, None


class NotificationConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self):
        token, subprotocol = find_token(self.scope)
        try:
            user_id = AccessToken(token)["user_id"] if token else None
        except TokenError:
            user_id = None
        if user_id is None:
            await self.close(code=4001)
            return
        self.group_name = f"notifications_{user_id}"
        await self.channel_layer.group_add(self.group_name, self.channel_name)
        await self.accept(subprotocol=subprotocol)

    async def disconnect(self, code):
        if hasattr(self, "group_name"):
            await self.channel_layer.group_discard(self.group_name, self.channel_name)

    async def send_notification(self, event):
        await self.send_json({"type": "notification", "data": event["data"]})
