#import "PBURLSessionTransport.h"

#import <Foundation/Foundation.h>

namespace parbench {

URLSessionTransport::URLSessionTransport(double timeout_s) : timeout_s_(timeout_s) {
  NSURLSessionConfiguration* config = [NSURLSessionConfiguration ephemeralSessionConfiguration];
  config.timeoutIntervalForRequest = timeout_s;
  config.timeoutIntervalForResource = timeout_s;
  config.waitsForConnectivity = NO;
  // Callbacks arrive on the session's own queue, so waiting on the calling thread is safe.
  session_ = [NSURLSession sessionWithConfiguration:config];
}

URLSessionTransport::~URLSessionTransport() { [session_ finishTasksAndInvalidate]; }

HttpResponse URLSessionTransport::send(const std::string& method, const std::string& url, const Headers& headers,
                                       const std::string& body) {
  HttpResponse out;
  NSURL* nsurl = [NSURL URLWithString:[NSString stringWithUTF8String:url.c_str()]];
  if (nsurl == nil) {
    out.error = "not a URL: " + url;
    return out;
  }
  NSMutableURLRequest* request = [NSMutableURLRequest requestWithURL:nsurl];
  request.HTTPMethod = [NSString stringWithUTF8String:method.c_str()];
  request.timeoutInterval = timeout_s_;
  for (const auto& [name, value] : headers) {
    [request setValue:[NSString stringWithUTF8String:value.c_str()]
        forHTTPHeaderField:[NSString stringWithUTF8String:name.c_str()]];
  }
  if (!body.empty()) request.HTTPBody = [NSData dataWithBytes:body.data() length:body.size()];

  dispatch_semaphore_t done = dispatch_semaphore_create(0);
  __block NSData* data = nil;
  __block NSHTTPURLResponse* response = nil;
  __block NSError* failure = nil;
  NSURLSessionDataTask* task = [session_ dataTaskWithRequest:request
                                           completionHandler:^(NSData* d, NSURLResponse* r, NSError* e) {
                                             data = d;
                                             response = (NSHTTPURLResponse*)r;
                                             failure = e;
                                             dispatch_semaphore_signal(done);
                                           }];
  [task resume];
  dispatch_semaphore_wait(done, DISPATCH_TIME_FOREVER);
  if (failure != nil || response == nil) {
    out.status = 0;
    out.error = failure ? std::string(failure.localizedDescription.UTF8String) : "no response";
    return out;
  }
  out.status = response.statusCode;
  if (data.length) out.body.assign(static_cast<const char*>(data.bytes), data.length);
  [response.allHeaderFields enumerateKeysAndObjectsUsingBlock:^(id key, id value, BOOL*) {
    std::string name = [[key description] lowercaseString].UTF8String;
    out.headers[name] = [[value description] UTF8String];
  }];
  return out;
}

}  // namespace parbench
