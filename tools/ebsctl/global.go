package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"
	"github.com/aws/aws-sdk-go-v2/service/ebs"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
)

// globalOptions are the flags every subcommand shares, and what one run of ebsctl
// learns from them.
type globalOptions struct {
	endpoint string
	region   string
	profile  string
	caBundle string
	json     bool
	attempts int
	quiet    bool

	flags  *flag.FlagSet // where the flags above are defined, for subcommands to parse
	stderr io.Writer     // usage and flag errors

	loaded *loadedConfig // one configuration (and credential look-up) per run; shared by copies
}

type loadedConfig struct {
	once sync.Once
	cfg  aws.Config
	err  error
}

func (g *globalOptions) register(fs *flag.FlagSet) {
	def := os.Getenv("AWS_ENDPOINT_URL_EBS")
	if def == "" {
		def = os.Getenv("AWS_ENDPOINT_URL")
	}
	fs.StringVar(&g.endpoint, "endpoint-url", def, "endpoint of ebsd or AWS (env AWS_ENDPOINT_URL_EBS or AWS_ENDPOINT_URL; empty: real AWS)")
	fs.StringVar(&g.region, "region", "", "AWS region (default: AWS_REGION or the shared config)")
	fs.StringVar(&g.profile, "profile", "", "shared config profile (default: AWS_PROFILE)")
	fs.StringVar(&g.caBundle, "ca-bundle", "", "PEM file of the certificate authorities to trust for an HTTPS endpoint (default: AWS_CA_BUNDLE or the profile's ca_bundle)")
	fs.BoolVar(&g.json, "json", false, "print JSON instead of text")
	fs.IntVar(&g.attempts, "max-attempts", 6, "attempts per request: 5xx and throttling are retried with exponential back-off and jitter, other 4xx never")
	fs.BoolVar(&g.quiet, "quiet", false, "no progress output")
}

// errNoCredentials says where credentials come from; ebsd, like AWS, refuses a request
// that is not signed by a credential it knows.
var errNoCredentials = errors.New(`no AWS credentials found to sign requests with. ebsctl finds them as the AWS tools do:
  - AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN) in the environment, or
  - a profile in the shared credentials and config files (~/.aws/credentials, ~/.aws/config),
    chosen with --profile or AWS_PROFILE.
ebsd prints the credential it generated as two export lines when it starts (see its README)`)

// awsConfig loads region and credentials the AWS way (flags, environment, shared
// config and credentials files), once per run, and insists that credentials exist:
// every request is signed with them.
func (g *globalOptions) awsConfig(ctx context.Context) (aws.Config, error) {
	if g.loaded == nil {
		return g.loadConfig(ctx)
	}
	g.loaded.once.Do(func() { g.loaded.cfg, g.loaded.err = g.loadConfig(ctx) })
	return g.loaded.cfg, g.loaded.err
}

func (g *globalOptions) loadConfig(ctx context.Context) (aws.Config, error) {
	var opts []func(*config.LoadOptions) error
	if g.region != "" {
		opts = append(opts, config.WithRegion(g.region))
	}
	if g.profile != "" {
		opts = append(opts, config.WithSharedConfigProfile(g.profile))
	}
	if g.caBundle != "" {
		pem, err := os.ReadFile(g.caBundle)
		if err != nil {
			return aws.Config{}, fmt.Errorf("--ca-bundle: %w", err)
		}
		opts = append(opts, config.WithCustomCABundle(bytes.NewReader(pem)))
	}
	if g.endpoint != "" {
		// Talking to an ebsd (or another endpoint) is no reason to ask the EC2 instance
		// metadata service for credentials: never send a request off this host for that.
		opts = append(opts, config.WithEC2IMDSClientEnableState(imds.ClientDisabled))
	}
	opts = append(opts, config.WithRetryer(func() aws.Retryer {
		return retry.NewStandard(func(o *retry.StandardOptions) {
			o.MaxAttempts = g.attempts
			o.RateLimiter = noRateLimit{} // the token bucket would stop retries of a long upload
			// The SDK retries every failed send; a certificate that does not verify
			// will not verify on the next attempt either, so say so at once.
			o.Retryables = append([]retry.IsErrorRetryable{retry.IsErrorRetryableFunc(certificateNotRetryable)}, o.Retryables...)
		})
	}))
	cfg, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return cfg, fmt.Errorf("loading AWS configuration: %w", err)
	}
	if cfg.Region == "" {
		cfg.Region = "us-east-1"
	}
	if cfg.Credentials == nil {
		return cfg, errNoCredentials
	}
	if _, err := cfg.Credentials.Retrieve(ctx); err != nil {
		return cfg, fmt.Errorf("%w\n(details: %w)", errNoCredentials, err)
	}
	return cfg, nil
}

func (g *globalOptions) clients(ctx context.Context) (*ebs.Client, *ec2.Client, error) {
	cfg, err := g.awsConfig(ctx)
	if err != nil {
		return nil, nil, err
	}
	eb := ebs.NewFromConfig(cfg, func(o *ebs.Options) {
		if g.endpoint != "" {
			o.BaseEndpoint = aws.String(g.endpoint)
		}
	})
	e2 := ec2.NewFromConfig(cfg, func(o *ec2.Options) {
		if g.endpoint != "" {
			o.BaseEndpoint = aws.String(g.endpoint)
		}
	})
	return eb, e2, nil
}

// ebsdURL is the base of ebsd's own extension endpoints.
func (g *globalOptions) ebsdURL(path string) (string, error) {
	if g.endpoint == "" {
		return "", fmt.Errorf("this subcommand is ebsd only: give --endpoint-url")
	}
	return trimSlash(g.endpoint) + path, nil
}

func trimSlash(s string) string {
	for len(s) > 0 && s[len(s)-1] == '/' {
		s = s[:len(s)-1]
	}
	return s
}

// certificateNotRetryable answers "no" for TLS certificate errors and leaves every
// other error to the SDK's own checks.
func certificateNotRetryable(err error) aws.Ternary {
	var verify *tls.CertificateVerificationError
	var unknownCA x509.UnknownAuthorityError
	var host x509.HostnameError
	var invalid x509.CertificateInvalidError
	if errors.As(err, &verify) || errors.As(err, &unknownCA) || errors.As(err, &host) || errors.As(err, &invalid) {
		return aws.FalseTernary
	}
	return aws.UnknownTernary
}

type noRateLimit struct{}

func (noRateLimit) GetToken(context.Context, uint) (func() error, error) {
	return func() error { return nil }, nil
}
func (noRateLimit) AddTokens(uint) error { return nil }
