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

// startGateway mounts the HTTP gateway (server/gateway) on the admin
// address: ingest under /v1/topics/, pull under /v1/groups/.
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
	store, err := gateway.NewStore(ctx, s.broker.JetStream())
	if err != nil {
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
	s.HandleRole("/v1/", "", "/v1/", auth.Requirement{Role: auth.RoleService, Check: s.mayUseGateway}, gw.Handler())
	s.Handle("/api/v1/subscriptions", gw.SubscriptionsHandler())
	s.Handle("/api/v1/subscriptions/", gw.SubscriptionsHandler())
	return nil
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
