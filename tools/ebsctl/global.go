package main

import (
	"context"
	"flag"
	"fmt"
	"os"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"
	"github.com/aws/aws-sdk-go-v2/service/ebs"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
)

// globalOptions are the flags every subcommand shares.
type globalOptions struct {
	endpoint string
	region   string
	profile  string
	json     bool
	attempts int
	quiet    bool
}

func (g *globalOptions) register(fs *flag.FlagSet) {
	def := os.Getenv("AWS_ENDPOINT_URL_EBS")
	if def == "" {
		def = os.Getenv("AWS_ENDPOINT_URL")
	}
	fs.StringVar(&g.endpoint, "endpoint-url", def, "endpoint of ebsd or AWS (env AWS_ENDPOINT_URL_EBS or AWS_ENDPOINT_URL; empty: real AWS)")
	fs.StringVar(&g.region, "region", "", "AWS region (default: AWS_REGION or the shared config)")
	fs.StringVar(&g.profile, "profile", "", "shared config profile (default: AWS_PROFILE)")
	fs.BoolVar(&g.json, "json", false, "print JSON instead of text")
	fs.IntVar(&g.attempts, "max-attempts", 6, "attempts per request: 5xx and throttling are retried with exponential back-off and jitter, other 4xx never")
	fs.BoolVar(&g.quiet, "quiet", false, "no progress output")
}

// awsConfig loads region and credentials the AWS way (flags, environment, shared
// config and credentials files). Against an ebsd endpoint with no credentials
// configured it signs with placeholder ones: ebsd does not verify signatures.
func (g *globalOptions) awsConfig(ctx context.Context) (aws.Config, error) {
	var opts []func(*config.LoadOptions) error
	if g.region != "" {
		opts = append(opts, config.WithRegion(g.region))
	}
	if g.profile != "" {
		opts = append(opts, config.WithSharedConfigProfile(g.profile))
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
		})
	}))
	cfg, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return cfg, fmt.Errorf("loading AWS configuration: %w", err)
	}
	if cfg.Region == "" {
		cfg.Region = "us-east-1"
	}
	if g.endpoint != "" {
		if _, err := cfg.Credentials.Retrieve(ctx); err != nil {
			cfg.Credentials = credentials.NewStaticCredentialsProvider("ebsd", "ebsd", "")
		}
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

type noRateLimit struct{}

func (noRateLimit) GetToken(context.Context, uint) (func() error, error) {
	return func() error { return nil }, nil
}
func (noRateLimit) AddTokens(uint) error { return nil }
