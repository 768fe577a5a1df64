from gateway.server import serve
from shared.settings import Settings

serve(Settings.from_env())
