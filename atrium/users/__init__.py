"""People in the web UI: users and roles, passwords, sessions and CSRF, conversations."""

from atrium.users.conversations import (
    CachedConversations,
    Conversation,
    ConversationRepository,
    Conversations,
    Message,
)
from atrium.users.passwords import HashCost, Passwords
from atrium.users.repository import ROLE_SCOPES, Role, User, UserRepository
from atrium.users.service import SignIn, UserChanges, UserService
from atrium.users.sessions import CookiePolicy, CsrfTokens, SessionCookieMiddleware
from atrium.users.throttle import InProcessLoginThrottle, LoginThrottle, RedisLoginThrottle

__all__ = [
    "ROLE_SCOPES",
    "CachedConversations",
    "Conversation",
    "ConversationRepository",
    "Conversations",
    "CookiePolicy",
    "CsrfTokens",
    "HashCost",
    "InProcessLoginThrottle",
    "LoginThrottle",
    "Message",
    "Passwords",
    "RedisLoginThrottle",
    "Role",
    "SessionCookieMiddleware",
    "SignIn",
    "User",
    "UserChanges",
    "UserRepository",
    "UserService",
]
