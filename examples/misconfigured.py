from fastapi import FastAPI
from starlette.middleware import Middleware
from starlette.middleware.gzip import GZipMiddleware

from apiguard import ConfigError, guard

app = FastAPI()

try:
    guard(app, Middleware(GZipMiddleware, minimum_sise=1000))
except ConfigError as error:
    message = str(error)

assert message == "GZipMiddleware: unknown option 'minimum_sise'; did you mean 'minimum_size'?"
