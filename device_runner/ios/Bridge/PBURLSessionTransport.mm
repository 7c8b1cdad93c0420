#import "PBURLSessionTransport.h"

#import <Foundation/Foundation.h>

#include "parbench/errors.h"

namespace parbench {

namespace {

NSString* ns(const std::string& s) { return [NSString stringWithUTF8String:s.c_str()]; }

NSMutableURLRequest* make_request(const std::string& method, const std::string& url, const Headers& headers,
                                  double timeout_s) {
  NSURL* nsurl = [NSURL URLWithString:ns(url)];
  if (nsurl == nil) return nil;
  NSMutableURLRequest* request = [NSMutableURLRequest requestWithURL:nsurl];
  request.HTTPMethod = ns(method);
  request.timeoutInterval = timeout_s;
  for (const auto& [name, value] : headers) [request setValue:ns(value) forHTTPHeaderField:ns(name)];
  return request;
}

// Status and lower-cased headers of an answer; status 0 and the reason when there was none.
void fill_response(HttpResponse& out, NSURLResponse* response, NSError* failure) {
  if (failure != nil || ![response isKindOfClass:[NSHTTPURLResponse class]]) {
    out.status = 0;
    out.error = failure ? std::string(failure.localizedDescription.UTF8String) : "no HTTP response";
    return;
  }
  NSHTTPURLResponse* http = (NSHTTPURLResponse*)response;
  out.status = http.statusCode;
  NSDictionary* fields = http.allHeaderFields;
  for (id key in fields) {
    out.headers[[[key description] lowercaseString].UTF8String] = [[fields[key] description] UTF8String];
  }
}

}  // namespace

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
  NSMutableURLRequest* request = make_request(method, url, headers, timeout_s_);
  if (request == nil) {
    out.error = "not a URL: " + url;
    return out;
  }
  if (!body.empty()) request.HTTPBody = [NSData dataWithBytes:body.data() length:body.size()];

  dispatch_semaphore_t done = dispatch_semaphore_create(0);
  __block NSData* data = nil;
  __block NSURLResponse* response = nil;
  __block NSError* failure = nil;
  NSURLSessionDataTask* task = [session_ dataTaskWithRequest:request
                                           completionHandler:^(NSData* d, NSURLResponse* r, NSError* e) {
                                             data = d;
                                             response = r;
                                             failure = e;
                                             dispatch_semaphore_signal(done);
                                           }];
  [task resume];
  dispatch_semaphore_wait(done, DISPATCH_TIME_FOREVER);
  fill_response(out, response, failure);
  if (out.status != 0 && data.length) out.body.assign(static_cast<const char*>(data.bytes), data.length);
  return out;
}

HttpResponse URLSessionTransport::download(const std::string& url, const Headers& headers,
                                           const std::string& dest_path) {
  HttpResponse out;
  NSMutableURLRequest* request = make_request("GET", url, headers, timeout_s_);
  if (request == nil) {
    out.error = "not a URL: " + url;
    return out;
  }
  NSURL* dest = [NSURL fileURLWithPath:ns(dest_path)];
  dispatch_semaphore_t done = dispatch_semaphore_create(0);
  __block NSURLResponse* response = nil;
  __block NSError* failure = nil;
  __block NSData* error_body = nil;
  __block NSString* move_error = nil;
  // The temporary file is deleted when the handler returns: it is moved (or read) inside it.
  NSURLSessionDownloadTask* task = [session_
      downloadTaskWithRequest:request
            completionHandler:^(NSURL* location, NSURLResponse* r, NSError* e) {
              response = r;
              failure = e;
              NSInteger status = [r isKindOfClass:[NSHTTPURLResponse class]] ? ((NSHTTPURLResponse*)r).statusCode : 0;
              if (location != nil && status >= 200 && status < 300) {
                NSFileManager* files = NSFileManager.defaultManager;
                NSError* error = nil;
                [files createDirectoryAtURL:[dest URLByDeletingLastPathComponent]
                    withIntermediateDirectories:YES
                                     attributes:nil
                                          error:nil];
                [files removeItemAtURL:dest error:nil];
                if (![files moveItemAtURL:location toURL:dest error:&error]) {
                  move_error = error.localizedDescription ?: @"unknown error";
                }
              } else if (location != nil) {
                error_body = [NSData dataWithContentsOfURL:location];
              }
              dispatch_semaphore_signal(done);
            }];
  [task resume];
  dispatch_semaphore_wait(done, DISPATCH_TIME_FOREVER);
  if (move_error != nil) throw FixtureError("cannot write " + dest_path + ": " + move_error.UTF8String);
  fill_response(out, response, failure);
  if (error_body.length) out.body.assign(static_cast<const char*>(error_body.bytes), error_body.length);
  return out;
}

}  // namespace parbench
