"""A real OpenID provider for the tests, built on Authlib's server side: the authorization
code grant (authlib.oauth2.rfc6749) with PKCE required (rfc7636) and OpenID Connect ID tokens
with a nonce required (authlib.oidc.core), signed with a fresh RSA key published as a JWKS,
and a discovery document — served over HTTP on 127.0.0.1 from a thread.

The provider signs in `user` without asking (the tests are its only users). `misbehave` makes
its next ID tokens wrong the way a broken or hostile provider's are: "audience" (issued to
another client), "signature" (signed with a key it does not publish, under the published kid),
"expired" (exp an hour ago), "issuer" (another issuer's name), "no-nonce" (nonce dropped).
"""
from __future__ import annotations

import secrets
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.oauth2 import OAuth2Error
from authlib.oauth2.rfc6749 import grants
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oidc.core import UserInfo
from authlib.oidc.core.grants import OpenIDCode
from flask import Flask, jsonify, request
from joserfc.jwk import KeySet, RSAKey
from werkzeug.serving import make_server

KID = "renkei-test-1"


@dataclass
class Client:
    client_id: str
    client_secret: str
    redirect_uris: list = field(default_factory=list)

    def get_client_id(self):
        return self.client_id

    def get_default_redirect_uri(self):
        return self.redirect_uris[0] if self.redirect_uris else None

    def get_allowed_scope(self, scope):
        return " ".join(s for s in scope.split() if s in ("openid", "email", "profile"))

    def check_redirect_uri(self, redirect_uri):
        return redirect_uri in self.redirect_uris

    def check_client_secret(self, client_secret):
        return secrets.compare_digest(client_secret, self.client_secret)

    def check_endpoint_auth_method(self, method, endpoint):
        return method in ("client_secret_basic", "client_secret_post")

    def check_response_type(self, response_type):
        return response_type == "code"

    def check_grant_type(self, grant_type):
        return grant_type == "authorization_code"


@dataclass
class Code:
    code: str
    client_id: str
    redirect_uri: str
    scope: str
    user: dict
    nonce: str | None
    code_challenge: str | None
    code_challenge_method: str | None
    auth_time: int = field(default_factory=lambda: int(time.time()))

    def get_redirect_uri(self):
        return self.redirect_uri

    def get_scope(self):
        return self.scope

    def get_nonce(self):
        return self.nonce

    def get_auth_time(self):
        return self.auth_time

    def get_acr(self):
        return None

    def get_amr(self):
        return None

    def is_expired(self):
        return time.time() - self.auth_time > 300


class TestProvider:
    __test__ = False   # not a pytest class

    def __init__(self, client_id: str = "renkei", client_secret: str = "s3cret-for-tests"):
        self.client = Client(client_id, client_secret)
        self.key = RSAKey.generate_key(2048, parameters={"kid": KID, "use": "sig",
                                                         "alg": "RS256"})
        self.user = {"sub": "hyogo-0001", "email": "staff@pref.hyogo.example",
                     "email_verified": True, "name": "兵庫 花子"}
        self.misbehave: str | None = None
        self.discovery_changes: dict = {}          # what discovery says otherwise
        self.codes: dict[str, Code] = {}
        self.token_requests: list[dict] = []      # what renkei sent to the token endpoint
        self.authorize_requests: list[dict] = []
        self.issuer = ""
        self.app = self._make_app()

    # -- what Authlib's server needs -----------------------------------------------------------

    def _make_app(self) -> Flask:
        provider = self
        app = Flask("test_oidc_provider")

        class CodeGrant(grants.AuthorizationCodeGrant):
            TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post"]

            def save_authorization_code(self, code, req):
                data = req.payload.data
                provider.codes[code] = Code(
                    code=code, client_id=req.client.client_id, redirect_uri=req.payload.redirect_uri,
                    scope=req.payload.scope, user=dict(req.user), nonce=data.get("nonce"),
                    code_challenge=data.get("code_challenge"),
                    code_challenge_method=data.get("code_challenge_method"))

            def query_authorization_code(self, code, client):
                item = provider.codes.get(code)
                if item and item.client_id == client.client_id and not item.is_expired():
                    return item
                return None

            def delete_authorization_code(self, authorization_code):
                provider.codes.pop(authorization_code.code, None)   # a code works once

            def authenticate_user(self, authorization_code):
                return authorization_code.user

        class IdToken(OpenIDCode):
            def exists_nonce(self, nonce, req):
                return any(c.nonce == nonce for c in provider.codes.values())

            def resolve_client_private_key(self, client):
                if provider.misbehave == "signature":
                    return RSAKey.generate_key(2048, parameters={"kid": KID})
                return provider.key

            def get_client_algorithm(self, client):
                return "RS256"

            def get_client_claims(self, client):
                now = int(time.time())
                claims = {"iss": provider.issuer, "aud": [client.client_id],
                          "iat": now, "exp": now + 600}
                if provider.misbehave == "audience":
                    claims["aud"] = ["another-client"]
                elif provider.misbehave == "expired":
                    claims.update(iat=now - 7200, exp=now - 3600, auth_time=now - 7200)
                elif provider.misbehave == "issuer":
                    claims["iss"] = "http://127.0.0.1:9/elsewhere"
                return claims

            def get_authorization_code_claims(self, authorization_code):
                claims = super().get_authorization_code_claims(authorization_code)
                if provider.misbehave == "no-nonce":
                    claims.pop("nonce", None)
                return claims

            def generate_user_info(self, user, scope):
                info = UserInfo(sub=user["sub"])
                if "email" in scope.split():
                    info["email"] = user.get("email")
                    info["email_verified"] = user.get("email_verified")
                if "profile" in scope.split():
                    info["name"] = user.get("name")
                return info

        server = AuthorizationServer(
            app, query_client=lambda cid: provider.client if cid == provider.client.client_id
            else None, save_token=lambda token, req: None)
        server.register_grant(CodeGrant, [CodeChallenge(required=True),
                                          IdToken(require_nonce=True)])

        @app.get("/.well-known/openid-configuration")
        def discovery():
            base = provider.issuer
            return jsonify({
                "issuer": base,
                "authorization_endpoint": base + "/authorize",
                "token_endpoint": base + "/token",
                "jwks_uri": base + "/jwks",
                "response_types_supported": ["code"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "code_challenge_methods_supported": ["S256"],
                "scopes_supported": ["openid", "email", "profile"],
                "token_endpoint_auth_methods_supported": ["client_secret_basic",
                                                          "client_secret_post"],
                **provider.discovery_changes,
            })

        @app.get("/jwks")
        def jwks():
            return jsonify(KeySet([provider.key]).as_dict(private=False))

        @app.get("/authorize")
        def authorize():
            provider.authorize_requests.append(request.args.to_dict())
            try:
                grant = server.get_consent_grant(end_user=provider.user)
            except OAuth2Error as error:
                return server.handle_error_response(None, error)
            return server.create_authorization_response(grant=grant, grant_user=provider.user)

        @app.post("/token")
        def token():
            provider.token_requests.append(request.form.to_dict())
            return server.create_token_response()

        return app

    @contextmanager
    def running(self):
        server = make_server("127.0.0.1", 0, self.app, threaded=True)
        self.issuer = f"http://127.0.0.1:{server.server_port}"
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield self.issuer
        finally:
            server.shutdown()
            thread.join(5)
