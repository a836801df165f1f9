package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"

	"github.com/ebsd/ebsd/cas"
)

// Error is an AWS-shaped error: HTTP status, exception name (x-amzn-ErrorType and
// __type), an optional Reason, and a message that says what was wrong.
type Error struct {
	Status  int
	Type    string
	Reason  string
	Message string
}

func (e *Error) Error() string {
	if e.Reason != "" {
		return fmt.Sprintf("%s (%s): %s", e.Type, e.Reason, e.Message)
	}
	return e.Type + ": " + e.Message
}

// Exception names and reasons, spelled as the EBS service model spells them.
const (
	validationException     = "ValidationException"
	resourceNotFound        = "ResourceNotFoundException"
	conflictException       = "ConflictException"
	concurrentLimitExceeded = "ConcurrentLimitExceededException"
	internalServerException = "InternalServerException"

	reasonInvalidParameterValue  = "INVALID_PARAMETER_VALUE"
	reasonInvalidBlock           = "INVALID_BLOCK"
	reasonInvalidSnapshotID      = "INVALID_SNAPSHOT_ID"
	reasonInvalidTag             = "INVALID_TAG"
	reasonInvalidVolumeSize      = "INVALID_VOLUME_SIZE"
	reasonInvalidContentEncoding = "INVALID_CONTENT_ENCODING"
	reasonSnapshotNotFound       = "SNAPSHOT_NOT_FOUND"
	reasonUnauthorizedAccount    = "UNAUTHORIZED_ACCOUNT"
	reasonInvalidPageToken       = "INVALID_PAGE_TOKEN"
	reasonInvalidBlockToken      = "INVALID_BLOCK_TOKEN"
	reasonUnrelatedSnapshots     = "UNRELATED_SNAPSHOTS"
)

func invalid(reason, format string, a ...any) *Error {
	return &Error{Status: http.StatusBadRequest, Type: validationException, Reason: reason, Message: fmt.Sprintf(format, a...)}
}

func invalidParameter(format string, a ...any) *Error {
	return invalid(reasonInvalidParameterValue, format, a...)
}

// fromStore turns a store error into the AWS error a client expects. Anything not
// recognised is an internal error; its detail goes to the log, not to the client.
func fromStore(err error) *Error {
	var apiErr *Error
	msg := err.Error()
	switch {
	case errors.As(err, &apiErr):
		return apiErr
	case errors.Is(err, cas.ErrNotOwner):
		return &Error{Status: http.StatusForbidden, Type: "AccessDeniedException", Reason: reasonUnauthorizedAccount, Message: msg}
	case errors.Is(err, cas.ErrSnapshotNotFound):
		return &Error{Status: http.StatusNotFound, Type: resourceNotFound, Reason: reasonSnapshotNotFound, Message: msg}
	case errors.Is(err, cas.ErrTokenConflict):
		return &Error{Status: http.StatusConflict, Type: conflictException, Message: msg}
	case errors.Is(err, cas.ErrPendingLimit):
		return &Error{Status: http.StatusBadRequest, Type: concurrentLimitExceeded, Message: msg}
	case errors.Is(err, cas.ErrNotPending), errors.Is(err, cas.ErrNotCompleted), errors.Is(err, cas.ErrParentNotReady):
		return invalid(reasonInvalidSnapshotID, "%s", msg)
	case errors.Is(err, cas.ErrUnrelated):
		return invalid(reasonUnrelatedSnapshots, "%s", msg)
	case errors.Is(err, cas.ErrVolumeTooSmall):
		return invalid(reasonInvalidVolumeSize, "%s", msg)
	case errors.Is(err, cas.ErrBlockOutOfRange):
		return invalid(reasonInvalidBlock, "%s", msg)
	case errors.Is(err, cas.ErrChecksumMismatch), errors.Is(err, cas.ErrCountMismatch), errors.Is(err, cas.ErrAggregateMismatch):
		return invalidParameter("%s", msg)
	case errors.Is(err, cas.ErrNoSpace):
		// What AWS answers when a write would take an account past what it may store:
		// 402 ServiceQuotaExceededException, DEPENDENCY_SERVICE_QUOTA_EXCEEDED, in the
		// EBS direct API's model for StartSnapshot and PutSnapshotBlock. SDKs do not retry
		// it (a full disk does not empty itself within a retry's backoff, and a 5xx would
		// have the client resend 512 KiB bodies into it); the message names the data
		// directory, its free bytes and the reserve, so an operator knows what to free.
		return &Error{Status: http.StatusPaymentRequired, Type: "ServiceQuotaExceededException", Reason: "DEPENDENCY_SERVICE_QUOTA_EXCEEDED", Message: msg}
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return &Error{Status: http.StatusServiceUnavailable, Type: internalServerException, Message: "request cancelled: " + msg}
	default:
		return &Error{Status: http.StatusInternalServerError, Type: internalServerException, Message: "internal error; see the daemon log for request id"}
	}
}

// writeError sends status, headers and body in one write, with a Content-Length.
func writeError(w http.ResponseWriter, e *Error) {
	body := map[string]string{"__type": e.Type, "Message": e.Message}
	if e.Reason != "" {
		body["Reason"] = e.Reason
	}
	b, _ := json.Marshal(body)
	h := w.Header()
	h["x-amzn-ErrorType"] = []string{e.Type} // spelled as AWS spells it
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(e.Status)
	_, _ = w.Write(b)
}

// writeJSON sends a JSON response in one write, with a Content-Length.
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		writeError(w, &Error{Status: http.StatusInternalServerError, Type: internalServerException, Message: "encoding response: " + err.Error()})
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// bodyReadFailure says why a request body could not be read, without the error's own
// text: a network error names the server's and the client's socket addresses.
func bodyReadFailure(err error) string {
	var ne net.Error
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		return fmt.Sprintf("the body is larger than the %d bytes this operation accepts", tooBig.Limit)
	case errors.As(err, &ne) && ne.Timeout():
		return "the body did not arrive within the server's read timeout"
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return "the body ended early"
	default:
		return "the connection failed while the body was read"
	}
}
