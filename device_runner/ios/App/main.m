// Host app of the XCTest bundle: the tests run inside this process, so they get its
// entitlements (increased memory limit) and its Info.plist (local network usage).
#import <UIKit/UIKit.h>

@interface PBAppDelegate : UIResponder <UIApplicationDelegate>
@property(nonatomic, strong) UIWindow *window;
@end

@implementation PBAppDelegate
- (BOOL)application:(UIApplication *)application didFinishLaunchingWithOptions:(NSDictionary *)launchOptions {
  self.window = [[UIWindow alloc] initWithFrame:UIScreen.mainScreen.bounds];
  UIViewController *root = [[UIViewController alloc] init];
  UILabel *label = [[UILabel alloc] init];
  label.text = @"parbench device runner: start it with xcodebuild test";
  label.numberOfLines = 0;
  label.textAlignment = NSTextAlignmentCenter;
  label.frame = CGRectInset(root.view.bounds, 24, 24);
  label.autoresizingMask = UIViewAutoresizingFlexibleWidth | UIViewAutoresizingFlexibleHeight;
  [root.view addSubview:label];
  root.view.backgroundColor = UIColor.systemBackgroundColor;
  self.window.rootViewController = root;
  [self.window makeKeyAndVisible];
  return YES;
}
@end

int main(int argc, char *argv[]) {
  @autoreleasepool {
    return UIApplicationMain(argc, argv, nil, NSStringFromClass([PBAppDelegate class]));
  }
}
