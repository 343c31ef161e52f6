"""mmmamba_client: a small OpenAI-compatible client for mmmambad on the
Python standard library alone.

    from mmmamba_client import Client, user_message
    c = Client("http://127.0.0.1:8000")
    r = c.chat([user_message("What is this?", images=["cat.jpg"])], max_tokens=64)
    print(r["choices"][0]["message"]["content"])
    for text in c.chat([user_message("Hi")], stream=True).text():
        print(text, end="", flush=True)

The terminal chat: python3 -m mmmamba_client chat --image cat.jpg "what is this?"
"""
from .client import Client, Stream, image_data_url, image_part, user_message
from .errors import (APIConnectionError, APIError, APITimeoutError, AuthenticationError,
                     BadRequestError, InternalServerError, MmmambaError, NotFoundError,
                     PayloadTooLargeError, RateLimitError, ServiceUnavailableError, StreamError)

__all__ = ["Client", "Stream", "image_data_url", "image_part", "user_message",
           "MmmambaError", "APIError", "APIConnectionError", "APITimeoutError",
           "BadRequestError", "AuthenticationError", "NotFoundError", "PayloadTooLargeError",
           "RateLimitError", "ServiceUnavailableError", "InternalServerError", "StreamError"]
__version__ = "0.1.0"
