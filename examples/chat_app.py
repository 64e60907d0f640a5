# app.py
from cablecar import Cable, Channel, Connection

class AppConnection(Connection):
    identified_by = ("current_user",)
    async def connect(self):
        user = self.request.query.get("user")
        if not user:
            self.reject_unauthorized()
        self.current_user = user

class ChatChannel(Channel):
    async def subscribed(self):
        if not self.params.get("room"):
            self.reject()
            return
        self.stream_from(f"chat_{self.params['room']}")
    async def speak(self, data):
        await self.cable.broadcast(f"chat_{self.params['room']}", {"from": self.current_user, "body": data["body"]})

cable = Cable(connection=AppConnection, channels=[ChatChannel])
