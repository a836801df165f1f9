package api

import (
	"context"
	"net/http"
)

// Identity is who sent a request, as its authentication established it.
type Identity struct {
	// AccountID is the 12-digit account that owns what the request creates and may
	// see only what that account owns.
	AccountID string
	// Admin accounts may use the ebsd extension endpoints under AdminPrefix.
	Admin bool
	// Region is the region the request was signed for (its credential scope); client
	// tokens are scoped by it.
	Region string
	// AccessKeyID names the credential that signed, for the log; empty when none did.
	AccessKeyID string
}

// Service names the signing name a request must be scoped to.
const (
	ServiceEBS = "ebs"
	ServiceEC2 = "ec2"
)

// Authenticator decides who sent a request. It runs before any handler: a request it
// refuses does nothing at all.
type Authenticator interface {
	// Authenticate returns the identity that signed r for service (ServiceEBS or
	// ServiceEC2). A refusal is an *AuthError, which the server writes in the
	// protocol's error shape. It may replace r.Body (to check a signed payload hash)
	// with a reader of the same bytes.
	Authenticate(r *http.Request, service string) (Identity, error)
}

// AuthError is a refused authentication. Kind selects the AWS error of each protocol
// (see errorForAuth).
type AuthError struct {
	Kind    AuthFailure
	Message string
}

func (e *AuthError) Error() string { return string(e.Kind) + ": " + e.Message }

// AuthFailure is why a request was not authenticated.
type AuthFailure string

const (
	AuthMissing      AuthFailure = "missing"       // no signature at all
	AuthIncomplete   AuthFailure = "incomplete"    // a malformed or unsupported signature
	AuthUnknownKey   AuthFailure = "unknown-key"   // an access key no account has
	AuthBadSignature AuthFailure = "bad-signature" // the signature does not match
	AuthExpired      AuthFailure = "expired"       // outside the clock window or past its expiry
	AuthForbidden    AuthFailure = "forbidden"     // authenticated, but not allowed (admin, browser)
	AuthThrottled    AuthFailure = "throttled"     // over the account's request rate
)

type identityKey struct{}

// withIdentity returns ctx carrying id.
func withIdentity(ctx context.Context, id Identity) context.Context {
	return context.WithValue(ctx, identityKey{}, id)
}

// IdentityOf returns the identity the server authenticated for this request.
func IdentityOf(ctx context.Context) (Identity, bool) {
	id, ok := ctx.Value(identityKey{}).(Identity)
	return id, ok
}

// owner is the account a handler acts for. Handlers run only after authentication,
// so an empty owner (which owns nothing) can only mean a wiring mistake.
func (s *Server) owner(r *http.Request) string {
	id, _ := IdentityOf(r.Context())
	return id.AccountID
}

// region is the region the request was signed for.
func (s *Server) region(r *http.Request) string {
	id, _ := IdentityOf(r.Context())
	return id.Region
}
