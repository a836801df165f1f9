package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/ebsd/ebsd/cas"
)

// Every store error becomes the AWS error a client expects; a corrupt block is a 500
// InternalServerException, never data.
func TestStoreErrorsMapToAWSErrors(t *testing.T) {
	for _, tc := range []struct {
		err             error
		status          int
		errType, reason string
	}{
		{cas.ErrSnapshotNotFound, 404, "ResourceNotFoundException", "SNAPSHOT_NOT_FOUND"},
		{cas.ErrTokenConflict, 409, "ConflictException", ""},
		{cas.ErrPendingLimit, 400, "ConcurrentLimitExceededException", ""},
		{cas.ErrNotPending, 400, "ValidationException", "INVALID_SNAPSHOT_ID"},
		{cas.ErrNotCompleted, 400, "ValidationException", "INVALID_SNAPSHOT_ID"},
		{cas.ErrVolumeTooSmall, 400, "ValidationException", "INVALID_VOLUME_SIZE"},
		{cas.ErrBlockOutOfRange, 400, "ValidationException", "INVALID_BLOCK"},
		{cas.ErrChecksumMismatch, 400, "ValidationException", "INVALID_PARAMETER_VALUE"},
		{cas.ErrUnrelated, 400, "ValidationException", "UNRELATED_SNAPSHOTS"},
		{cas.ErrCorruptBlock, 500, "InternalServerException", ""},
	} {
		rec := httptest.NewRecorder()
		writeError(rec, fromStore(fmt.Errorf("context: %w", tc.err)))
		var body map[string]string
		if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
			t.Fatal(err)
		}
		if rec.Code != tc.status || rec.Header()["x-amzn-ErrorType"][0] != tc.errType || body["__type"] != tc.errType ||
			body["Reason"] != tc.reason || body["Message"] == "" || rec.Header().Get("Content-Length") == "" {
			t.Errorf("%v: %d %v %v", tc.err, rec.Code, rec.Header(), body)
		}
	}
	// An internal error's detail stays in the log.
	rec := httptest.NewRecorder()
	writeError(rec, fromStore(fmt.Errorf("disk on fire at /secret/path")))
	if rec.Code != http.StatusInternalServerError || !json.Valid(rec.Body.Bytes()) || strings.Contains(rec.Body.String(), "/secret/path") {
		t.Fatalf("unknown error: %d %s", rec.Code, rec.Body)
	}
}

type timeoutErr struct{}

func (timeoutErr) Error() string   { return "read tcp 10.1.2.3:8600->10.9.8.7:51515: i/o timeout" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

// TestBodyReadFailureHidesSocketAddresses: a read timeout's message names neither
// the server's nor the client's address.
func TestBodyReadFailureHidesSocketAddresses(t *testing.T) {
	for _, err := range []error{timeoutErr{}, fmt.Errorf("wrapped: %w", timeoutErr{}), io.ErrUnexpectedEOF, errors.New("read tcp 10.1.2.3:8600->10.9.8.7:51515: connection reset by peer")} {
		msg := bodyReadFailure(err)
		if strings.Contains(msg, "10.") || strings.Contains(msg, "tcp") || msg == "" {
			t.Fatalf("bodyReadFailure(%v) = %q", err, msg)
		}
	}
	if got := bodyReadFailure(timeoutErr{}); !strings.Contains(got, "timeout") {
		t.Fatalf("a timeout is not called one: %q", got)
	}
}
