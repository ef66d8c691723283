package api

// spire.api.server.logger.v1: the server's log level, changed at runtime
// through a slog.LevelVar and reset to the level it was launched with.

import (
	"context"
	"log/slog"

	loggerv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/logger/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// slog levels for SPIRE's logrus levels beyond slog's four.
const (
	levelTrace = slog.LevelDebug - 4
	levelFatal = slog.LevelError + 4
	levelPanic = slog.LevelError + 8
)

// LogLevelToProto is the SPIRE log level of a slog level: each of SPIRE's
// levels covers the slog levels from it up to the next.
func LogLevelToProto(l slog.Level) types.LogLevel {
	switch {
	case l >= levelPanic:
		return types.LogLevel_PANIC
	case l >= levelFatal:
		return types.LogLevel_FATAL
	case l >= slog.LevelError:
		return types.LogLevel_ERROR
	case l >= slog.LevelWarn:
		return types.LogLevel_WARN
	case l >= slog.LevelInfo:
		return types.LogLevel_INFO
	case l >= slog.LevelDebug:
		return types.LogLevel_DEBUG
	}
	return types.LogLevel_TRACE
}

// LogLevelFromProto is the slog level of a SPIRE log level; false for
// UNSPECIFIED and unknown values.
func LogLevelFromProto(l types.LogLevel) (slog.Level, bool) {
	switch l {
	case types.LogLevel_PANIC:
		return levelPanic, true
	case types.LogLevel_FATAL:
		return levelFatal, true
	case types.LogLevel_ERROR:
		return slog.LevelError, true
	case types.LogLevel_WARN:
		return slog.LevelWarn, true
	case types.LogLevel_INFO:
		return slog.LevelInfo, true
	case types.LogLevel_DEBUG:
		return slog.LevelDebug, true
	case types.LogLevel_TRACE:
		return levelTrace, true
	}
	return 0, false
}

// logger serves logger.v1 over the level of the server's handler.
type logger struct {
	loggerv1.UnimplementedLoggerServer
	s      *Service
	level  *slog.LevelVar
	launch slog.Level
}

var errNoLogLevel = status.Error(codes.Unimplemented, "this server's log level cannot be changed at runtime")

func (l *logger) current() *types.Logger {
	return &types.Logger{CurrentLevel: LogLevelToProto(l.level.Level()), LaunchLevel: LogLevelToProto(l.launch)}
}

func (l *logger) GetLogger(context.Context, *loggerv1.GetLoggerRequest) (*types.Logger, error) {
	if l.level == nil {
		return nil, errNoLogLevel
	}
	return l.current(), nil
}

func (l *logger) SetLogLevel(ctx context.Context, req *loggerv1.SetLogLevelRequest) (*types.Logger, error) {
	if l.level == nil {
		return nil, errNoLogLevel
	}
	if req.NewLevel == types.LogLevel_UNSPECIFIED {
		return nil, status.Error(codes.InvalidArgument, "newLevel value cannot be LogLevel_UNSPECIFIED")
	}
	lv, ok := LogLevelFromProto(req.NewLevel)
	if !ok {
		return nil, status.Error(codes.InvalidArgument, "unsupported log level")
	}
	// Logged before the change, so that it shows at the old level.
	l.s.log.InfoContext(ctx, "log level set", "previous_level", LogLevelToProto(l.level.Level()).String(), "new_level", req.NewLevel.String())
	l.level.Set(lv)
	return l.current(), nil
}

func (l *logger) ResetLogLevel(ctx context.Context, _ *loggerv1.ResetLogLevelRequest) (*types.Logger, error) {
	if l.level == nil {
		return nil, errNoLogLevel
	}
	l.level.Set(l.launch)
	l.s.log.InfoContext(ctx, "log level reset", "launch_level", LogLevelToProto(l.launch).String())
	return l.current(), nil
}
