"""The application's NotificationConsumer, written as the contract
describes it: the token from the subprotocol first, then the `access`
cookie, then `?token=`; HS256 JWTs signed with SECRET_KEY carrying
`user_id`, whose user must exist and be active (simplejwt's
JWTAuthentication.get_user); group `notifications_{user_id}`;
`send_notification` events forwarded as {"type": "notification", "data": ...}."""

from http.cookies import SimpleCookie
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from rest_framework.exceptions import AuthenticationFailed
from rest_framework_simplejwt.authentication import JWTAuthentication
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


@database_sync_to_async
def user_of(token):
    try:
        return JWTAuthentication().get_user(AccessToken(token))
    except (TokenError, AuthenticationFailed):
        return None


class NotificationConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self):
        token, subprotocol = find_token(self.scope)
        user = await user_of(token) if token else None
        if user is None:
            await self.close(code=4001)
            return
        self.group_name = f"notifications_{user.pk}"
        await self.channel_layer.group_add(self.group_name, self.channel_name)
        await self.accept(subprotocol=subprotocol)

    async def disconnect(self, code):
        if hasattr(self, "group_name"):
            await self.channel_layer.group_discard(self.group_name, self.channel_name)

    async def send_notification(self, event):
        await self.send_json({"type": "notification", "data": event["data"]})
