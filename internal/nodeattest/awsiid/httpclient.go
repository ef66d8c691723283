package awsiid

// Response bounds. A DescribeInstances answer for one instance is a few KB
// (50 tags at most); an instance metadata answer is under 2 KB. Every HTTP
// call this package makes, through the SDK or not, goes through a
// boundedhttp client with one of them.
const (
	maxAWSResponse  = 1 << 20
	maxIMDSResponse = 64 << 10
)
