package api

import (
	"errors"
	"net/http"
	"strings"
)

// serviceOf is the signing name a request to path must be scoped to: the EC2 Query
// endpoint is "/", everything else (the EBS routes and ebsd's own) is "ebs".
func serviceOf(path string) string {
	if path == "/" {
		return ServiceEC2
	}
	return ServiceEBS
}

// admit runs before every handler: browser checks, authentication, the admin check
// of ebsd's own endpoints and the account's rate. It returns the request to serve,
// carrying the identity, or false after writing the refusal.
func (s *Server) admit(w http.ResponseWriter, r *http.Request) (*http.Request, bool) {
	service := serviceOf(r.URL.Path)
	if why := s.browserRefusal(r, service); why != "" {
		s.refuse(w, r, service, &AuthError{Kind: AuthForbidden, Message: why})
		return nil, false
	}
	if s.cfg.Auth == nil {
		s.refuse(w, r, service, &AuthError{Kind: AuthMissing, Message: "this endpoint has no way to authenticate requests"})
		return nil, false
	}
	id, err := s.cfg.Auth.Authenticate(r, service)
	if err != nil {
		var ae *AuthError
		if !errors.As(err, &ae) {
			ae = &AuthError{Kind: AuthIncomplete, Message: err.Error()}
		}
		s.refuse(w, r, service, ae)
		return nil, false
	}
	info(r).account = id.AccountID
	if strings.HasPrefix(r.URL.Path, AdminPrefix) && !id.Admin {
		s.refuse(w, r, service, &AuthError{Kind: AuthForbidden, Message: "account " + id.AccountID + " is not an ebsd administrator: " + AdminPrefix + " needs one"})
		return nil, false
	}
	if s.cfg.Limit != nil && !s.cfg.Limit.Allow(id.AccountID) {
		s.refuse(w, r, service, &AuthError{Kind: AuthThrottled, Message: "account " + id.AccountID + " is over its request rate; retry with back-off"})
		return nil, false
	}
	return r.WithContext(withIdentity(r.Context(), id)), true
}

// refuse writes a refused authentication the way AWS does for the protocol: the EBS
// REST-JSON exceptions, or EC2's XML codes.
func (s *Server) refuse(w http.ResponseWriter, r *http.Request, service string, ae *AuthError) {
	s.log.Debug("request refused", "request_id", info(r).id, "why", ae.Kind, "msg", ae.Message)
	if service == ServiceEC2 {
		s.writeEC2Error(w, r, ec2AuthError(ae))
		return
	}
	writeError(w, ebsAuthError(ae))
}

// ebsAuthError is the EBS (REST-JSON) answer to a refused request; the README lists
// these. The SDKs turn x-amzn-ErrorType into the error code.
func ebsAuthError(ae *AuthError) *Error {
	switch ae.Kind {
	case AuthMissing:
		return &Error{Status: http.StatusForbidden, Type: "MissingAuthenticationTokenException", Message: "Missing Authentication Token: " + ae.Message}
	case AuthUnknownKey:
		return &Error{Status: http.StatusForbidden, Type: "UnrecognizedClientException", Message: "The security token included in the request is invalid: " + ae.Message}
	case AuthBadSignature:
		return &Error{Status: http.StatusForbidden, Type: "InvalidSignatureException", Message: ae.Message}
	case AuthExpired:
		return &Error{Status: http.StatusBadRequest, Type: "RequestExpired", Message: ae.Message}
	case AuthForbidden:
		return &Error{Status: http.StatusForbidden, Type: "AccessDeniedException", Reason: reasonUnauthorizedAccount, Message: ae.Message}
	case AuthThrottled:
		return &Error{Status: http.StatusBadRequest, Type: "RequestThrottledException", Reason: "ACCOUNT_THROTTLED", Message: ae.Message}
	default: // AuthIncomplete
		return &Error{Status: http.StatusBadRequest, Type: "IncompleteSignatureException", Message: ae.Message}
	}
}

// ec2AuthError is the EC2 Query answer to a refused request.
func ec2AuthError(ae *AuthError) *ec2Error {
	switch ae.Kind {
	case AuthMissing:
		return ec2Err(http.StatusUnauthorized, "MissingAuthenticationToken", "Request is missing Authentication Token: %s", ae.Message)
	case AuthUnknownKey, AuthBadSignature:
		return ec2Err(http.StatusUnauthorized, "AuthFailure", "AWS was not able to validate the provided access credentials: %s", ae.Message)
	case AuthExpired:
		return ec2Err(http.StatusBadRequest, "RequestExpired", "Request has expired: %s", ae.Message)
	case AuthForbidden:
		return ec2Err(http.StatusForbidden, "UnauthorizedOperation", "You are not authorized to perform this operation: %s", ae.Message)
	case AuthThrottled:
		return ec2Err(http.StatusServiceUnavailable, "RequestLimitExceeded", "Request limit exceeded: %s", ae.Message)
	default:
		return ec2Err(http.StatusBadRequest, "IncompleteSignature", "%s", ae.Message)
	}
}

// RateLimiter admits or refuses an account's next request.
type RateLimiter interface {
	Allow(accountID string) bool
}
