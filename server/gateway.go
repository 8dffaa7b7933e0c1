package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/broker/natsjs"
	"github.com/heraldhq/herald/event"
	"github.com/heraldhq/herald/server/auth"
	"github.com/heraldhq/herald/server/gateway"
)

// startGateway mounts the HTTP gateway (server/gateway): ingest under
// /v1/topics/, pull under /v1/groups/, on the gateway listener when
// Config.GatewayAddr sets one, else on the admin address. The
// subscriptions API is an admin API and stays on the admin address.
func (s *Server) startGateway(ctx context.Context) error {
	var b broker.Broker = s.broker
	binding := event.NATS
	check := func(ctx context.Context, topic string) error {
		_, err := s.broker.JetStream().Stream(ctx, natsjs.StreamName(topic))
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			return fmt.Errorf("%w %q", gateway.ErrUnknownTopic, topic)
		}
		return err
	}
	if s.events != nil {
		b, check = s.events, nil // Kafka and RabbitMQ create topics on first use
		binding = event.Kafka
		if !strings.HasPrefix(s.cfg.BrokerURL, "kafka://") {
			binding = event.AMQP
		}
	}
	client, err := herald.Connect(ctx, herald.Config{Broker: b, Binding: &binding, Logger: s.log})
	if err != nil {
		return fmt.Errorf("server: gateway: %w", err)
	}
	var store *gateway.Store
	if err := natsjs.Retry(ctx, func(ctx context.Context) (err error) {
		store, err = gateway.NewStore(ctx, s.broker.JetStream(), s.broker.Replicas())
		return err
	}); err != nil {
		return fmt.Errorf("server: %w", err)
	}
	metrics := s.telem
	opts := []gateway.Option{gateway.WithRegistry(s.registry), gateway.WithLogger(s.log),
		gateway.WithStore(store), gateway.WithObserver(metrics)}
	if check != nil {
		opts = append(opts, gateway.WithTopicCheck(check))
	}
	gw, err := gateway.New(client, opts...)
	if err != nil {
		return fmt.Errorf("server: %w", err)
	}
	if err := gw.Start(ctx); err != nil {
		return fmt.Errorf("server: gateway: %w", err)
	}
	s.gateway = gw
	if s.gwLn != nil {
		s.gwMux = http.NewServeMux()
		s.gwMux.Handle("/", gw.Handler())
		s.gwMux.HandleFunc("GET /healthz", s.healthz)
		s.gwMux.HandleFunc("GET /readyz", s.readyz)
	} else {
		s.HandleRole("/v1/", "", "/v1/", auth.Requirement{Role: auth.RoleService, Check: s.mayUseGateway}, gw.Handler())
	}
	s.Handle("/api/v1/subscriptions", gw.SubscriptionsHandler())
	s.Handle("/api/v1/subscriptions/", gw.SubscriptionsHandler())
	return nil
}

// gatewayPolicy is the policy of the gateway listener: health checks are
// public, the gateway's API needs a service (or an admin) that
// mayUseGateway lets in.
func (s *Server) gatewayPolicy(r *http.Request) auth.Requirement {
	if r.URL.Path == "/healthz" || r.URL.Path == "/readyz" {
		return auth.Requirement{Public: r.Method == http.MethodGet || r.Method == http.MethodHead}
	}
	return auth.Requirement{Role: auth.RoleService, Check: s.mayUseGateway}
}

// Gateway returns the HTTP gateway.
func (s *Server) Gateway() *gateway.Gateway { return s.gateway }

// mayUseGateway lets services publish to their publish topics and pull
// the groups of their subscribe topics; operators need the admin role.
func (s *Server) mayUseGateway(id *auth.Identity, r *http.Request) error {
	if id.Role != auth.RoleService {
		if id.Role != auth.RoleAdmin {
			return fmt.Errorf("%s has role %s; the HTTP gateway needs a service identity or an admin", id.Name, id.Role)
		}
		return nil
	}
	if rest, ok := strings.CutPrefix(r.URL.Path, "/v1/topics/"); ok {
		topic, _, _ := strings.Cut(rest, "/")
		if !slices.Contains(id.Publish, topic) {
			return fmt.Errorf("service %s may not publish to topic %q", id.Name, topic)
		}
		return nil
	}
	if rest, ok := strings.CutPrefix(r.URL.Path, "/v1/groups/"); ok {
		group, _, _ := strings.Cut(rest, "/")
		topic, known := s.gateway.GroupTopic(group)
		if known && !slices.Contains(id.Subscribe, topic) {
			return fmt.Errorf("service %s may not consume topic %q (group %q)", id.Name, topic, group)
		}
		return nil // unknown groups get 404
	}
	return nil
}
